"""Rate limits for reports of bad input, so one broken or hostile sender cannot flood the event log.

The first report of a kind goes out at once; after that at most one per ``interval`` for that kind,
and at most ``burst`` per ``interval`` over all kinds (input that varies its topic on every message
is still bounded). What is held back is counted: the next report of that kind carries the count,
and ``due()`` hands out a summary for kinds that went quiet, so no suppressed report is silent.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


def kind_of(reason: str) -> str:
    """A reason with its numbers blanked: "2559 bytes …" and "2561 bytes …" are one kind of error."""
    return _NUMBER.sub("#", reason[:80])


class _Kind(Generic[T]):
    __slots__ = ("held", "last", "sample")

    def __init__(self) -> None:
        self.last = float("-inf")
        self.held = 0
        self.sample: T | None = None


class RateLimit(Generic[T]):
    """Decides which reports go out and counts the ones held back."""

    def __init__(
        self,
        interval: float = 1.0,
        burst: int = 10,
        max_kinds: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.burst = burst
        self.max_kinds = max_kinds
        self.clock = clock
        self.held_total = 0
        """Reports held back since the start."""
        self._kinds: OrderedDict[Hashable, _Kind[T]] = OrderedDict()
        self._window = float("-inf")
        self._in_window = 0
        self._orphans = 0  # held back by kinds forgotten to stay within max_kinds

    def _budget(self, now: float) -> bool:
        if now - self._window >= self.interval:
            self._window, self._in_window = now, 0
        return self._in_window < self.burst

    def admit(self, key: Hashable, sample: T | None = None) -> int | None:
        """None to hold this report back (counted; ``sample`` kept for the summary), else how many
        reports of this kind were held back since the last one that went out."""
        now = self.clock()
        kind = self._kinds.get(key)
        if kind is None:
            while len(self._kinds) >= self.max_kinds:
                _, old = self._kinds.popitem(last=False)
                self._orphans += old.held
            kind = self._kinds[key] = _Kind()
        else:
            self._kinds.move_to_end(key)
        if now - kind.last < self.interval or not self._budget(now):
            kind.held += 1
            kind.sample = sample
            self.held_total += 1
            return None
        return self._release(kind, now)

    def _release(self, kind: _Kind[T], now: float) -> int:
        self._in_window += 1
        kind.last = now
        held, kind.held, kind.sample = kind.held + self._orphans, 0, None
        self._orphans = 0
        return held

    def due(self) -> list[tuple[T, int]]:
        """Summaries owed: the last held-back report of each kind whose interval has passed, and how many
        others were held back with it (so that one summary, like any report, stands for 1 + that many)."""
        now = self.clock()
        out = []
        for kind in list(self._kinds.values()):
            if kind.held and kind.sample is not None and now - kind.last >= self.interval and self._budget(now):
                sample = kind.sample
                out.append((sample, self._release(kind, now) - 1))
        return out
