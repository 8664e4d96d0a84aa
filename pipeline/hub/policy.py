"""Which events a sender may have logged: the deployment's publish policy and the events only the hub sends."""

from __future__ import annotations

from sensorium.pipeline.busguard import PublishPolicy
from sensorium.pipeline.messages import Placement

__all__ = ["HUB_ONLY", "PublishPolicy"]


HUB_ONLY = (Placement,)
"""Events only the hub publishes."""
