"""The hub: data bus proxy, control socket, node health, event log and presence snapshot.

Its parts, each in its own module: ``core`` (``Hub``: the bus proxy, the sockets, their keys and the loops),
``events`` (the tap, group commits and publishing), ``control`` (one handler per control request class, the
node table), ``placement`` (who serves which stream of a replicated stage), ``policy`` (who may publish
what) and ``security`` (enrolled CURVE keys).
"""

from sensorium.pipeline.hub.control import MAX_NODES, NodeInfo
from sensorium.pipeline.hub.core import Hub
from sensorium.pipeline.hub.policy import HUB_ONLY, PublishPolicy
from sensorium.pipeline.hub.security import SecurityError, may_speak_as

__all__ = ["HUB_ONLY", "MAX_NODES", "Hub", "NodeInfo", "PublishPolicy", "SecurityError", "may_speak_as"]
