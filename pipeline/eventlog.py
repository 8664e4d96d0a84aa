"""The hub's event log: every event gets the next hub sequence number and is kept, bounded.

A subscriber that reconnects asks for the events after its last sequence number and gets each
missed event exactly once. With a state folder the log is an append-only JSON-lines file, so the
sequence and the recent events survive a power cut; a torn last line is dropped with a warning.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path

import msgspec

log = logging.getLogger("sensorium.eventlog")


class LoggedEvent(msgspec.Struct, array_like=True):
    """One entry: hub sequence number, topic, public JSON."""

    seq: int
    topic: str
    json: bytes


class EventLog:
    """Bounded, optionally persistent, sequenced event log."""

    def __init__(self, capacity: int = 10000, path: Path | None = None) -> None:
        self.capacity = capacity
        self.path = path
        self.entries: deque[LoggedEvent] = deque(maxlen=capacity)
        self.last_seq = 0
        self._fd: int | None = None
        self._lines_in_file = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_mode & 0o077:
            log.warning(
                "event log %s was readable by others (mode %o); restricting it to 0600",
                path,
                path.stat().st_mode & 0o777,
            )
            os.chmod(path, 0o600)
        if path.exists():
            raw = path.read_bytes()
            lines = raw.split(b"\n")
            torn = 0
            for i, line in enumerate(lines):
                if not line:
                    continue
                try:
                    seq, topic, js = msgspec.json.decode(line)
                    entry = LoggedEvent(int(seq), str(topic), str(js).encode())
                except (msgspec.DecodeError, ValueError, TypeError):
                    torn += 1
                    log.warning("event log %s: skipping damaged line %d", path, i + 1)
                    continue
                if entry.seq <= self.last_seq:
                    continue
                self.entries.append(entry)
                self.last_seq = entry.seq
                self._lines_in_file += 1
            if torn or (raw and not raw.endswith(b"\n")):
                self._compact()  # rewrite without the damage so later appends start on a clean line
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def _compact(self) -> None:
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            for e in self.entries:
                f.write(msgspec.json.encode([e.seq, e.topic, e.json.decode()]) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines_in_file = len(self.entries)

    def append(self, topic: str, event_json_without_seq: bytes | None = None, *, build=None) -> LoggedEvent:
        """Assign the next sequence number; ``build(seq) -> json`` makes the stored JSON."""
        self.last_seq += 1
        js = build(self.last_seq) if build is not None else (event_json_without_seq or b"{}")
        entry = LoggedEvent(self.last_seq, topic, js)
        self.entries.append(entry)
        if self._fd is not None:
            os.write(self._fd, msgspec.json.encode([entry.seq, entry.topic, js.decode()]) + b"\n")
            self._lines_in_file += 1
            if self._lines_in_file > 2 * self.capacity:
                os.close(self._fd)
                self._compact()
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # type: ignore[arg-type]
        return entry

    @property
    def first_seq(self) -> int:
        """Oldest sequence number still held (last_seq + 1 when empty)."""
        return self.entries[0].seq if self.entries else self.last_seq + 1

    def since(self, seq: int, prefixes: Iterable[str] = ()) -> list[LoggedEvent]:
        """Events with sequence numbers above ``seq`` whose topic starts with one of ``prefixes``."""
        prefixes = tuple(prefixes)
        out = []
        for e in reversed(self.entries):
            if e.seq <= seq:
                break
            if not prefixes or e.topic.startswith(prefixes):
                out.append(e)
        out.reverse()
        return out

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
