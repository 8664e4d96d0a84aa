"""sensorium: the senses of a home assistant.

For agent authors, the public entry points::

    from sensorium import Client, collect, messages

(``Client`` follows the hub's events and sends commands; ``messages`` holds the typed events it yields,
``messages.Transcript`` and the rest; see ``docs/events.md``.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sensorium.pipeline import messages
    from sensorium.pipeline.client import Client, collect

__all__ = ["Client", "collect", "messages"]


def __getattr__(name: str) -> Any:
    # Lazy: ``python -m sensorium --help`` does not load ZeroMQ for a name it never uses.
    if name == "messages":
        from sensorium.pipeline import messages

        return messages
    if name in __all__:
        from sensorium.pipeline import client

        return getattr(client, name)
    raise AttributeError(f"module 'sensorium' has no attribute {name!r}")
