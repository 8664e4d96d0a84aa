"""The MQTT bridge: presence states with Home Assistant discovery, events, and commands back.

``Bridge`` (``bridges.mqtt.bridge``) runs it; ``topics``, ``state``, ``discovery`` and ``commands``
are its pure parts (topic layout, the house state derived from events, discovery payloads,
command parsing), each testable without a broker.
"""

from sensorium.bridges.mqtt.bridge import Bridge, BridgeError

__all__ = ["Bridge", "BridgeError"]
