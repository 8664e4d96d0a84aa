"""A room's voice for Home Assistant: the piece the Wyoming satellite and the ESPHome device share.

Both paths decide the same way when a room speaks up to Home Assistant and hand it the same audio:

* a ring buffer of each microphone node's recent audio in the room (the arbiter decides a few hundred ms
  after the wake word, so the pipeline's audio must start before the decision);
* the arbiter's ``arbitration`` for this room (or, with no arbiter stage up on the hub, the room's own
  first ``wake``) starts a run — once per wake word (an arbitration after a direct start is the same one);
* the run's audio: the ring from the wake time on (the first chunk cut at it), then live chunks, until
  the run stops streaming;
* ``Listen`` claims the utterance (``open``; the path publishes it when its run starts) and, when Home
  Assistant goes away mid-run, releases it at once (``drop``): sensorium's own agent answers the next one.

A path subclasses :class:`RoomVoice` with ``ready`` (Home Assistant connected and listening) and
``start_run`` (make its run and start streaming it).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from sensorium.pipeline.messages import AudioChunk, Listen, Message, WakeArbitrated, WakeDetected

RATE = 16000
RING_S = 3.0
"""Room audio kept for the start of a run (the arbiter decides a few hundred ms after the wake word)."""
SAME_WAKE_S = 1.0
"""A start within this of the current run's wake time is the same wake word (arbitration after a direct start)."""


class RoomRun(Protocol):
    """What the shared logic needs of a path's run."""

    node: str
    wake_time: float
    request_id: str
    streaming: bool
    queue: asyncio.Queue[bytes | None]

    def stop_streaming(self) -> None: ...


M = TypeVar("M", bound=Message)


class BusLike(Protocol):
    clock: Any

    async def publish(self, msg: Message) -> None: ...

    def listen(self, cls: type[M], fn: Callable[[M], None]) -> Callable[[], None]: ...

    def stage_up(self, stage: str) -> bool: ...


R = TypeVar("R", bound=RoomRun)


class RoomVoice(Generic[R]):
    """One room's link to Home Assistant: its ring buffer, the wake decision, the run, the claim."""

    what = "room"
    """How log lines name this path ("satellite", "device")."""

    def __init__(self, bus: BusLike, room: str, mics: set[str], log: logging.Logger) -> None:
        self.bus = bus
        self.room = room
        self.mics = mics
        self.log = log
        self.ring: dict[str, deque[tuple[float, bytes]]] = {}
        self.run: R | None = None
        self.pipelines = 0
        """Runs started in Home Assistant since start."""

    # ------------------------------------------------------------------------- for the path

    def ready(self) -> bool:
        """Home Assistant is connected and listening to this room."""
        raise NotImplementedError

    def start_run(self, node: str, wake_time: float, word: str) -> R:
        """Make the path's run (its task starts streaming ``run.queue`` to Home Assistant)."""
        raise NotImplementedError

    def accepts(self, word: str) -> bool:
        """This wake word starts a run here (a path may let Home Assistant choose among the room's words)."""
        return True

    # ------------------------------------------------------------------------------ the bus

    def listen_bus(self) -> list[Callable[[], None]]:
        """Subscribe to the room's audio, wake words and arbitration; returns the closers."""
        return [
            self.bus.listen(AudioChunk, self.on_audio),
            self.bus.listen(WakeArbitrated, self.on_arbitration),
            self.bus.listen(WakeDetected, self.on_wake),
        ]

    def on_audio(self, msg: Message) -> None:
        if not isinstance(msg, AudioChunk) or msg.room != self.room or msg.rate != RATE or msg.channels != 1:
            return
        ring = self.ring.setdefault(msg.source, deque())
        ring.append((msg.time, msg.data))
        while ring and ring[0][0] < msg.time - RING_S:
            ring.popleft()
        run = self.run
        if run is not None and run.streaming and run.node == msg.source:
            run.queue.put_nowait(msg.data)

    def on_wake(self, msg: Message) -> None:
        # Without an arbiter on the hub the room's own first detection decides.
        if isinstance(msg, WakeDetected) and msg.room == self.room and (msg.node or msg.source) in self.mics:
            if not self.bus.stage_up("arbiter") and self.accepts(msg.word):
                self.begin(msg.node or msg.source, msg.time, msg.word)

    def on_arbitration(self, msg: Message) -> None:
        if isinstance(msg, WakeArbitrated) and msg.room == self.room and msg.node in self.mics:
            if self.accepts(msg.word):
                self.begin(msg.node, msg.wake_time, msg.word)

    # --------------------------------------------------------------------------------- runs

    def begin(self, node: str, wake_time: float, word: str, *, ring: bool = True) -> R | None:
        """Start a run with the room's audio from ``wake_time`` on (``ring=False``: from now on)."""
        if not self.ready():
            self.log.info("%s %s: wake word heard, but Home Assistant is not connected and ready", self.room, self.what)
            return None
        if self.run is not None and abs(self.run.wake_time - wake_time) < SAME_WAKE_S:
            return None  # the same wake word (arbitration after a direct start)
        self.end_run()
        run = self.run = self.start_run(node, wake_time, word)
        if ring:
            # The room's audio from the wake word on, already here: cut the first chunk at the wake time.
            for t, data in self.ring.get(node, ()):
                if t + len(data) / (2 * RATE) <= wake_time:
                    continue
                run.queue.put_nowait(data[max(0, round((wake_time - t) * RATE)) * 2 :])
        self.pipelines += 1
        self.log.info(
            "%s %s: %s on %s, running a pipeline in Home Assistant",
            self.room, self.what, f"wake word {word}" if word else "listening", node,
        )  # fmt: skip
        return run

    def end_run(self) -> None:
        if self.run is not None:
            self.run.stop_streaming()
            self.run = None

    def claim(self, run: R) -> Listen:
        """The ``Listen`` that claims ``run``'s utterance for Home Assistant (sensorium's agent leaves it)."""
        return Listen(room=self.room, node=run.node, action="open", time=run.wake_time, request_id=run.request_id)

    async def release(self) -> None:
        """Home Assistant went away: end the run and give the room's utterance back at once."""
        run = self.run
        if run is None:
            return
        self.log.info("%s %s: Home Assistant went away mid-pipeline; releasing the room", self.room, self.what)
        self.end_run()
        await self.bus.publish(Listen(room=self.room, node=run.node, action="drop", request_id=run.request_id))
