"""Retry pacing and status reporting shared by the edge sources (microphone, cameras)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

#: ``(state, detail)``: "up" when a source (re)opened, "error" when it failed; the agent turns it into ``NodeStatus``.
StatusCallback = Callable[[str, str], None]


@dataclass
class Backoff:
    """Exponential backoff: ``first``, ×``factor`` per failure, capped at ``cap``; ``reset`` after a success."""

    first: float = 0.5
    """First delay, seconds."""
    cap: float = 10.0
    """Longest delay, seconds."""
    factor: float = 2.0
    """Growth per consecutive failure."""
    failures: int = field(default=0)
    """Consecutive failures so far."""

    def next(self) -> float:
        """The delay before the next attempt (counts one more failure)."""
        delay = min(self.cap, self.first * self.factor**self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures after a success."""
        self.failures = 0


def report(callback: StatusCallback | None, state: str, detail: str) -> None:
    """Call ``callback`` if set; a failing callback must never stop capture."""
    if callback is None:
        return
    try:
        callback(state, detail)
    except Exception:  # the status path is best effort
        import logging

        logging.getLogger("sensorium.edge").exception("status callback failed")
