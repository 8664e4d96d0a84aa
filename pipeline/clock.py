"""The shared timebase: every node stamps messages with its estimate of the hub's clock.

Each node reads its own monotonic clock and adds an offset to the hub's clock, estimated from
heartbeat round trips (NTP's method: the sample with the smallest round trip is the most
trustworthy). The hub's clock is its wall clock, so public event times are Unix times, while a node
whose wall clock is wrong (a Pi without RTC after a power cut) still stamps correct times.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Clock:
    """A monotonic clock plus an offset to the hub's clock."""

    offset: float = field(default_factory=lambda: time.time() - time.monotonic())
    """Seconds to add to ``time.monotonic()`` to get hub time; starts at this host's wall clock."""
    window: int = 16
    """How many recent round trips the estimate considers."""
    _samples: deque[tuple[float, float]] = field(default_factory=deque, repr=False)
    synced: bool = False
    """True once at least one round trip to the hub has been measured."""

    def now(self) -> float:
        """Current hub time, seconds."""
        return time.monotonic() + self.offset

    def to_local(self, hub_time: float) -> float:
        """Convert a hub time to this host's monotonic clock."""
        return hub_time - self.offset

    def observe(self, sent: float, hub_time: float, received: float) -> float:
        """Add one round trip (local monotonic ``sent``/``received``, hub clock ``hub_time``).

        Returns the round trip in seconds. The offset becomes the one implied by the
        minimum-round-trip sample of the window.
        """
        rtt = max(received - sent, 0.0)
        offset = hub_time - (sent + received) / 2
        self._samples.append((rtt, offset))
        while len(self._samples) > self.window:
            self._samples.popleft()
        self.offset = min(self._samples)[1]
        self.synced = True
        return rtt

    @property
    def best_rtt(self) -> float:
        """Smallest round trip in the window, seconds (0 before the first sample)."""
        return min(self._samples)[0] if self._samples else 0.0
