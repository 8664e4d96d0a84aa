"""Where everything lives on the broker.

``<base>/<site>/…`` holds the bridge's own topics (availability, states, events, commands);
``<discovery_prefix>/<component>/sensorium_<site>/<object_id>/config`` holds Home Assistant's
discovery configs. States never live under the discovery prefix. Rooms and people appear in topics
and entity ids as slugs (lower case letters, digits and ``_``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_NOT_SLUG = re.compile(r"[^a-z0-9_]+")


def slug(name: str) -> str:
    """``"Living Room"`` → ``"living_room"``: a topic level and an HA object id."""
    return _NOT_SLUG.sub("_", name.strip().lower()).strip("_")


def title(name: str) -> str:
    """``"living_room"`` → ``"Living room"``: a device name."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Topics:
    """The topic layout for one site."""

    base: str
    """``[mqtt] base_topic``."""
    site: str
    """``[mqtt] site``."""
    discovery_prefix: str
    """``[mqtt] discovery_prefix``."""

    @property
    def root(self) -> str:
        return f"{self.base}/{self.site}"

    @property
    def status(self) -> str:
        """Availability: retained ``online``/``offline``, ``offline`` also as the last will."""
        return f"{self.root}/status"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth/will topic: ``online`` means "send discovery again"."""
        return f"{self.discovery_prefix}/status"

    def room(self, room: str, leaf: str) -> str:
        return f"{self.root}/room/{slug(room)}/{leaf}"

    def person(self, person: str, leaf: str) -> str:
        return f"{self.root}/person/{slug(person)}/{leaf}"

    def event(self, kind: str, room: str) -> str:
        """Every public event, as its JSON form: ``events/<type>/<room>`` (``-`` for house-wide)."""
        return f"{self.root}/events/{kind}/{slug(room) or '-'}"

    def command_filters(self) -> list[str]:
        """Subscriptions for the commands back."""
        return [f"{self.root}/say/+", f"{self.root}/say_person/+", f"{self.root}/stop/+"]

    def command(self, topic: str) -> tuple[str, str] | None:
        """``(verb, target slug)`` of a command topic, None for anything else."""
        prefix = f"{self.root}/"
        if not topic.startswith(prefix):
            return None
        verb, _, target = topic[len(prefix) :].partition("/")
        if verb not in ("say", "say_person", "stop") or not target or "/" in target:
            return None
        return verb, target

    @property
    def node_id(self) -> str:
        return f"sensorium_{self.site}"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node_id}/{object_id}/config"
