"""The hub's event log: every event gets the next hub sequence number and is kept, bounded.

A subscriber that reconnects asks for the events after its last sequence number and gets each
missed event exactly once. With a state folder the log is an append-only JSON-lines file (mode
0600: it holds transcripts), so the sequence and the recent events survive a power cut.

Durability is a group commit: the hub ``stage``\\ s what arrived together, ``flush`` writes those
lines with one fsync (off the event loop), and only then ``release`` makes them visible to the
control socket and the hub publishes them. A number a client has seen is therefore always on disk,
and a torn tail after a power cut only ever holds numbers nobody saw.

Loading skips exactly the damaged lines (bad JSON, wrong shape or types, a sequence number out of
range or out of order with its neighbours, an event that does not decode or disagrees with its
line) and keeps the rest, so one bad line never costs the history after it.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import logging
import os
import secrets
import stat
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from sensorium.pipeline.codec import MAX_TOPIC, CodecError, from_json
from sensorium.pipeline.messages import EVENTS

log = logging.getLogger("sensorium.eventlog")

MAX_SEQ = 2**53 - 1
"""Largest sequence number the log accepts (exact in JSON everywhere, JavaScript included)."""
MAX_EVENT_JSON = 60 * 1024
"""Largest event (public JSON) the log keeps: one must fit in a control reply's 64 KiB header."""
_MAX_LINE = MAX_EVENT_JSON * 2 + MAX_TOPIC + 64  # JSON string escaping can double the event's size


class LoggedEvent(msgspec.Struct, array_like=True):
    """One entry: hub sequence number, topic, public JSON."""

    seq: int
    topic: str
    json: bytes


class EventLogError(OSError):
    """The event log could not be written (disk full, I/O error): the hub must not go on without it."""


_LOGGED = frozenset(EVENTS)
_Line = tuple[int, str, str]
_line_decoder = msgspec.json.Decoder(_Line)


def _parse(line: bytes) -> tuple[int | None, LoggedEvent | None, str]:
    """``(seq, entry, why)``: the entry if the whole line is sound, else why not."""
    if len(line) > _MAX_LINE:
        return None, None, f"{len(line)} bytes, longer than any event"
    try:
        seq, topic, js = _line_decoder.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return None, None, f"not a [seq, topic, event] line: {exc}"
    if not 1 <= seq <= MAX_SEQ:
        return None, None, f"sequence number {seq} out of range"
    raw = js.encode()
    if len(raw) > MAX_EVENT_JSON:
        return seq, None, f"event of {len(raw)} bytes, limit {MAX_EVENT_JSON}"
    try:
        ev = from_json(raw)
    except CodecError as exc:
        return seq, None, str(exc)
    if type(ev) not in _LOGGED:
        return seq, None, f"{type(ev).__name__} is not an event the hub logs"
    if ev.seq != seq:
        return seq, None, f"line says seq {seq}, its event says {ev.seq}"
    if ev.topic() != topic:
        return seq, None, f"line says topic {topic[:64]!r}, its event has {ev.topic()[:64]!r}"
    return seq, LoggedEvent(seq, topic, raw), ""


def _increasing(seqs: list[int]) -> set[int]:
    """Indexes of a longest strictly increasing subsequence: the lines that agree with their neighbours."""
    tails: list[int] = []  # smallest last seq of an increasing run of each length
    tail_at: list[int] = []  # its index
    prev = [-1] * len(seqs)
    for i, s in enumerate(seqs):
        k = bisect.bisect_left(tails, s)
        if k == len(tails):
            tails.append(s)
            tail_at.append(i)
        else:
            tails[k] = s
            tail_at[k] = i
        prev[i] = tail_at[k - 1] if k else -1
    keep: set[int] = set()
    i = tail_at[-1] if tail_at else -1
    while i >= 0:
        keep.add(i)
        i = prev[i]
    return keep


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


DEFAULT_MAX_BYTES = 32 * 1024 * 1024
"""Default bound of the events held (their JSON and topics), beside the count."""
_ENTRY_OVERHEAD = 120  # a LoggedEvent, its bytes and str objects, the deque slot


def _size(e: LoggedEvent) -> int:
    return len(e.json) + len(e.topic) + _ENTRY_OVERHEAD


class EventLog:
    """Bounded (by count and by bytes), optionally persistent, sequenced event log."""

    def __init__(self, capacity: int = 10000, path: Path | None = None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        """Most bytes of events held in memory; the file holds at most about twice as much before compaction."""
        self.path = path
        self.entries: deque[LoggedEvent] = deque()
        self.bytes = 0
        """Bytes of the events held now (JSON, topic and per-entry overhead)."""
        self._file_bytes = 0
        self.epoch = secrets.token_hex(8)
        """A random id made with the log (kept beside its file): clients resuming from another one re-base."""
        self.last_seq = 0
        """Newest sequence number that is durable and visible (what clients may have seen)."""
        self.damaged = 0
        """Lines skipped as damaged when the file was loaded."""
        self._pending: list[LoggedEvent] = []
        self._fd: int | None = None
        self._lines_in_file = 0
        if path is not None:
            self._load(path)

    def _load(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        st = path.stat() if path.exists() else None
        if st is not None and not stat.S_ISREG(st.st_mode):
            # e.g. a symlink to a device: append to it, but never read or chmod it
            log.warning("event log %s is not a regular file; it is written but not read back", path)
        elif st is not None:
            if st.st_mode & 0o077:
                log.warning(
                    "event log %s was readable by others (mode %o); restricting it to 0600", path, st.st_mode & 0o777
                )
                os.chmod(path, 0o600)
            self._read(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._load_epoch(path, fresh=st is None or st.st_size == 0)

    def _load_epoch(self, path: Path, fresh: bool) -> None:
        """The epoch kept beside the log (``events.jsonl.epoch``); a new one when the log is new or was deleted."""
        side = path.with_name(path.name + ".epoch")
        if not fresh:
            with contextlib.suppress(OSError, UnicodeDecodeError):
                old = side.read_text().strip()
                if len(old) == 16 and all(c in "0123456789abcdef" for c in old):
                    self.epoch = old
                    return
        try:
            fd = os.open(side.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, self.epoch.encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(side.with_suffix(".tmp"), side)
        except OSError as exc:
            log.warning("event log %s: cannot keep its epoch in %s: %s", path, side, exc)

    def _read(self, path: Path) -> None:
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline; else a line cut by a power cut
        rows = [(i + 1, *_parse(line)) for i, line in enumerate(lines) if line]
        tail_entry = _parse(tail)[1] if tail else None
        if tail_entry is not None:  # whole but for its newline
            rows.append((len(lines) + 1, tail_entry.seq, tail_entry, ""))
        valid = [k for k, r in enumerate(rows) if r[2] is not None]
        in_order = {valid[j] for j in _increasing([rows[k][1] for k in valid])}  # type: ignore[misc]
        for k, (lineno, seq, entry, why) in enumerate(rows):
            if k in in_order:
                self._keep(entry)  # type: ignore[arg-type]
                self.last_seq = seq  # type: ignore[assignment]
                continue
            if entry is not None:
                why = f"sequence number {seq} out of order with its neighbours"
            self.damaged += 1
            log.warning("event log %s: skipping damaged line %d: %s", path, lineno, why)
        self._lines_in_file = len(rows)
        self._file_bytes = len(raw)
        if tail and tail_entry is None:
            log.warning("event log %s: dropping a torn last line (%d bytes)", path, len(tail))
            with open(path, "r+b") as f:
                f.truncate(len(raw) - len(tail))
                os.fsync(f.fileno())
        elif tail:
            with open(path, "ab") as f:  # complete line, lost only its newline: later appends start clean
                f.write(b"\n")
                os.fsync(f.fileno())

    def _compact(self, entries: Iterable[LoggedEvent]) -> int:
        """Rewrite the file with ``entries`` only (atomically, mode 0600); returns the lines written."""
        assert self.path is not None
        tmp = self.path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)  # an old one may have another owner or mode
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        n = 0
        try:
            os.fchmod(fd, 0o600)  # the umask cannot widen it, but be explicit about what the file holds
            chunk: list[bytes] = []
            size = chunked = 0
            for e in entries:  # in pieces of ~1 MiB: never a second copy of the whole log in memory
                line = _line(e)
                chunk.append(line)
                n += 1
                size += len(line)
                chunked += len(line)
                if chunked >= 1 << 20:
                    _write_all(fd, b"".join(chunk))
                    chunk, chunked = [], 0
            _write_all(fd, b"".join(chunk))
            self._file_bytes = size
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)  # the rename itself must survive a power cut
        finally:
            os.close(dfd)
        return n

    # ------------------------------------------------------------------ appending

    def stage(self, topic: str, build: Callable[[int], bytes]) -> LoggedEvent:
        """Give the next sequence number to an event; ``build(seq) -> json`` makes its stored JSON.

        The entry is not visible (``since``, ``last_seq``) until ``flush`` made it durable and
        ``release`` returned it.
        """
        seq = self.last_seq + len(self._pending) + 1
        if seq > MAX_SEQ:
            raise EventLogError(0, f"event log {self.path}: sequence numbers exhausted (the next is above {MAX_SEQ})")
        entry = LoggedEvent(seq, topic, build(seq))
        self._pending.append(entry)
        return entry

    def unstage(self) -> None:
        """Forget what was staged (an event the log refused after ``build``)."""
        self._pending.pop()

    @property
    def pending(self) -> int:
        """Entries staged and not yet released."""
        return len(self._pending)

    def flush(self) -> None:
        """Write the staged entries with one fsync (blocking: run it off the event loop).

        Raises ``EventLogError`` if the disk refuses them; the entries stay staged and invisible.
        """
        if self._fd is None or not self._pending:
            return
        try:
            blob = b"".join(_line(e) for e in self._pending)
            _write_all(self._fd, blob)
            os.fsync(self._fd)
            self._lines_in_file += len(self._pending)
            self._file_bytes += len(blob)
            if self._lines_in_file > 2 * self.capacity or self._file_bytes > 2 * self.max_bytes:
                kept, size = [], 0
                for e in reversed([*self.entries, *self._pending]):  # the newest that fit both bounds
                    size += _size(e)
                    if kept and (len(kept) >= self.capacity or size > self.max_bytes):
                        break
                    kept.append(e)
                kept.reverse()
                os.close(self._fd)
                self._fd = None
                self._lines_in_file = self._compact(kept)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)  # type: ignore[arg-type]
        except OSError as exc:
            raise EventLogError(exc.errno, f"event log {self.path}: {exc.strerror or exc}") from exc

    def release(self) -> list[LoggedEvent]:
        """Make the flushed entries visible; returns them, oldest first (the caller publishes them)."""
        out, self._pending = self._pending, []
        for e in out:
            self._keep(e)
        if out:
            self.last_seq = out[-1].seq
        return out

    def append(self, topic: str, event_json_without_seq: bytes | None = None, *, build=None) -> LoggedEvent:
        """Stage, flush and release one entry (blocking; the hub batches instead)."""
        js = event_json_without_seq or b"{}"
        entry = self.stage(topic, build if build is not None else (lambda _seq: js))
        self.flush()
        self.release()
        return entry

    def _keep(self, e: LoggedEvent) -> None:
        """Hold ``e``, dropping the oldest while either bound is exceeded (the newest always stays)."""
        self.entries.append(e)
        self.bytes += _size(e)
        while len(self.entries) > 1 and (len(self.entries) > self.capacity or self.bytes > self.max_bytes):
            self.bytes -= _size(self.entries.popleft())

    @property
    def first_seq(self) -> int:
        """Oldest sequence number still held (last_seq + 1 when empty)."""
        return self.entries[0].seq if self.entries else self.last_seq + 1

    def since(
        self,
        seq: int,
        prefixes: Iterable[str] = (),
        max_bytes: int | None = None,
        max_events: int | None = None,
    ) -> list[LoggedEvent]:
        """Events with sequence numbers above ``seq`` whose topic starts with one of ``prefixes``, oldest first.

        With ``max_bytes`` / ``max_events``, only the oldest of them that fit (always at least one):
        the cost follows the answer, not the size of the log.
        """
        prefixes = tuple(prefixes)
        start = bisect.bisect_right(self.entries, seq, key=lambda e: e.seq)
        out: list[LoggedEvent] = []
        size = 0
        for e in itertools.islice(self.entries, start, None):
            if prefixes and not e.topic.startswith(prefixes):
                continue
            size += len(e.json) + 8
            if out and ((max_bytes is not None and size > max_bytes) or len(out) == max_events):
                break
            out.append(e)
        return out

    def close(self) -> None:
        """Close the file."""
        if self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as exc:
                log.error("event log %s: final fsync failed: %s", self.path, exc)
            os.close(self._fd)
            self._fd = None


def _line(e: LoggedEvent) -> bytes:
    return msgspec.json.encode([e.seq, e.topic, e.json.decode()]) + b"\n"
