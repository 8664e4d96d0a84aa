"""Which events a sender may have logged: the deployment's publish policy and the events only the hub sends."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.messages import Event, InputError, Placement


@dataclass(frozen=True)
class PublishPolicy:
    """Who may publish which events, from the deployment (``sensorium.deployment.publish_policy``).

    The hub checks each event its tap gets against it before numbering it: an edge publishes only its own
    node's status and its room's playback and input errors; a worker only the events of the stages placed
    on it (and its status, budget and input errors); nobody but the hub node status about another node or
    placement. Events in a room the deployment does not have are refused too. What the check relies on is
    the event's claimed ``source``: the bus does not say who sent a message (see docs/architecture.md)."""

    rooms: frozenset[str]
    kinds: dict[str, frozenset[str]]
    """Node name → the event kinds (topic kinds) it may publish."""
    edge_room: dict[str, str]
    """Edge node → its room (its events are for that room only)."""

    def problem(self, msg: Event) -> str | None:
        """Why ``msg`` may not be logged, or None."""
        allowed = self.kinds.get(msg.source)
        if allowed is None:
            return f"{msg.source[:64]!r} is no node of the deployment"
        if msg.kind not in allowed:
            return f"{msg.source[:64]!r} may not publish {msg.kind} events (it may: {', '.join(sorted(allowed))})"
        if isinstance(msg, InputError):
            return None  # input it refused may name any room (a fuzzed one, too)
        if msg.room and msg.room not in self.rooms:
            return f"room {msg.room[:64]!r} is not in the deployment"
        room = self.edge_room.get(msg.source)
        if room is not None and msg.room not in ("", room):
            return f"edge {msg.source[:64]!r} is in {room!r}, not {msg.room[:64]!r}"
        return None


HUB_ONLY = (Placement,)
"""Events only the hub publishes."""
