"""The ``Stage`` abstraction every processing step in ``nodes/`` implements.

A stage declares what it consumes and emits, its latency budget, whether late input may be
dropped, and an ordered degrade ladder. The runtime (``pipeline.runtime``) feeds it messages,
measures latency from each input's capture time, drops late droppable input, reports budget
violations, and moves the stage down and up its ladder. The stage itself only turns input into
output; its blocking model calls go through ``ctx.run_blocking`` so the event loop never stalls.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
import math
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import msgspec
import numpy as np

from sensorium.pipeline.clock import Clock
from sensorium.pipeline.config import Deployment, decode_durations
from sensorium.pipeline.config import Duration as Duration  # re-exported: stages declare their options with it
from sensorium.pipeline.messages import AudioChunk, InputError, Message
from sensorium.pipeline.ratelimit import RateLimit, kind_of

T = TypeVar("T")


AUDIO_RATE = 16000
"""The rate voice stages take: 16 kHz mono int16."""
CLIP_SHARE = 0.2
"""A chunk with more than this share of samples at full scale is rejected as clipped."""
MAX_STREAMS = 64
"""Most streams a stage keeps state for when the deployment names no sources (tests, ad-hoc runs)."""
MAX_CHUNK_S = 2.0
"""Longest audio chunk accepted (edges send 80 ms): a 10 MB chunk would hold a stage for seconds."""


def check_audio(msg: AudioChunk, rooms: tuple[str, ...]) -> str | None:
    """Why ``msg`` cannot be used as 16 kHz mono int16 speech, or None if it can (shared by voice stages)."""
    if rooms and msg.room not in rooms:
        return unknown_room(msg.room, rooms)
    if msg.rate != AUDIO_RATE:
        return f"sample rate {msg.rate} Hz, expected {AUDIO_RATE} Hz"
    if msg.channels != 1:
        return f"{msg.channels} channels, expected mono"
    if len(msg.data) == 0:
        return "empty audio chunk"
    if len(msg.data) % 2:
        return f"{len(msg.data)} bytes is not a whole number of 16-bit samples"
    if len(msg.data) > MAX_CHUNK_S * AUDIO_RATE * 2:
        return f"chunk of {len(msg.data) / (2 * AUDIO_RATE):.1f} s of audio, limit {MAX_CHUNK_S:g} s"
    if not math.isfinite(msg.time) or msg.time <= 0:
        return f"invalid capture time {msg.time!r}"
    pcm = msg.pcm()
    if len(pcm) >= 160 and float(np.mean(np.abs(pcm.astype(np.int32)) >= 32767)) > CLIP_SHARE:
        return "audio is clipped (over 20% of samples at full scale): lower the microphone gain"
    return None


def unknown_room(room: str, rooms: tuple[str, ...]) -> str:
    """The one wording of an input for a room the deployment does not have."""
    return f"unknown room {room!r} (known: {', '.join(rooms)})"


@dataclass
class StageContext:
    """What the runtime gives a stage."""

    name: str
    """Stage name in the config ("wake", "stt" …)."""
    worker: str
    """Worker process the stage runs in; used as ``source`` of what it emits."""
    options: Any
    """The stage's validated ``Options`` struct (its ``[stages.<name>]`` table from the config)."""
    device: str = "cpu"
    """Where to run models: "cpu", "cuda:0" …"""
    budget_ms: float = 1000.0
    """Latency budget from the input's capture time."""
    clock: Clock = field(default_factory=Clock)
    """Hub timebase for stamping outputs."""
    data_dir: Path = field(default_factory=lambda: Path(".sensorium"))
    """Where galleries and caches live."""
    rooms: tuple[str, ...] = ()
    """Rooms known to the deployment; input for another room is rejected."""
    sources: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Edge nodes the deployment places in each room: streams from anyone else are refused (empty: not checked)."""
    max_future: float | None = 2.0
    """Input stamped more than this many seconds ahead of the hub clock is refused (None: accepted, for
    replays faster than real time, which stamp ahead on purpose)."""
    emit: Callable[[Message], Awaitable[None]] | None = None
    """Publishes a message on the bus (set by the runtime)."""
    observe: Callable[[float, Message], Awaitable[None]] | None = None
    """Reports the latency of an output made in the background (set by the runtime; see ``report``)."""
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("sensorium.stage"))
    """Logger for this stage."""
    errors: RateLimit[InputError] = field(default_factory=RateLimit)
    """Rate limit of this stage's ``error`` events (see ``report_error``)."""
    nice: int = 0
    """How much lower than the process the stage's thread runs (Linux nice; set from ``Stage.nice``)."""
    serving: Callable[[str], bool] | None = None
    """For a replicated stage (set by the worker): does this worker serve stream ``stream`` now (placement)? A
    stream handed to another worker mid-utterance is finished there from its takeover ring. None: every stream."""
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    @classmethod
    def placed(
        cls,
        deployment: Deployment,
        name: str,
        *,
        worker: str,
        device: str,
        emit: Callable[[Message], Awaitable[None]],
        clock: Clock | None = None,
        max_future: float | None = 2.0,
    ) -> StageContext:
        """The context of stage ``name`` as ``deployment`` places it: its options and budget, the data
        folder, the rooms and their sources (the edge nodes and the Wyoming gateway's streams of each room: the
        streams a stage keeps state for). The worker loads its stages with it, and ``sensorium doctor``
        the stages it checks, so a stage loads in the doctor as it will in the worker."""
        settings = deployment.stages[name]
        return cls(
            name=name,
            worker=worker,
            options=settings.options,
            device=device,
            budget_ms=settings.budget_s * 1000,
            clock=clock or Clock(),
            data_dir=deployment.data_dir,
            rooms=tuple(deployment.rooms),
            sources=deployment.sources(),
            max_future=max_future,
            emit=emit,
            log=logging.getLogger(f"sensorium.stage.{name}"),
        )

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking call (model inference) on the stage's own worker thread.

        One thread per stage keeps calls into a model ordered and off the event loop. A stage with
        ``nice`` gets its thread at that lower priority, and so do the thread pools its libraries
        start from it (threads inherit it): vision yields the cores to voice when they are short.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1,
                thread_name_prefix=f"stage-{self.name}",
                initializer=lower_priority,
                initargs=(self.nice,),
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def serves(self, stream: str) -> bool:
        """True unless placement handed ``stream`` (a room, a camera) to another worker."""
        return self.serving is None or self.serving(stream)

    async def publish(self, msg: Message) -> None:
        """Emit ``msg`` with this worker as its source (unless the stage set one)."""
        if not msg.source:
            msg.source = self.worker
        if self.emit is not None:
            await self.emit(msg)

    async def report(self, output: Message, since: float) -> None:
        """Count ``output``'s latency, measured from capture time ``since``, against the budget.

        For stages whose answers come from background work rather than from ``handle`` (STT's
        final transcript is decoded after the endpoint, not while a chunk is handled): they set
        ``reports_latency`` and the runtime enforces the budget on what they report.
        """
        if self.observe is not None:
            await self.observe(self.clock.now() - since, output)

    def stream_problem(self, room: str, source: str, t: float) -> str | None:
        """Why a stream's input (``room``, ``source``, capture time ``t``) is refused, or None.

        Per-stream state (model buffers, audio rings) is created only for streams that pass, so an
        unknown or lying sender cannot make a stage grow.
        """
        if problem := self.room_problem(room):
            return problem
        if self.sources and source not in self.sources.get(room, ()):
            nodes = ", ".join(self.sources.get(room, ())) or "none"
            return f"unknown source {source[:64]!r} in room {room!r} (its edge nodes: {nodes})"
        if self.max_future is not None:
            ahead = t - self.clock.now()
            if ahead > self.max_future:
                return f"stamped {ahead:.1f} s ahead of the hub clock (limit {self.max_future:g} s): clock not synced?"
        return None

    def room_problem(self, room: str) -> str | None:
        """Why input for ``room`` is refused (a room the deployment does not have), or None."""
        return unknown_room(room, self.rooms) if self.rooms and room not in self.rooms else None

    async def reject(self, msg: Message, reason: str) -> None:
        """Report bad input as an ``error`` event (rate-limited) and carry on."""
        await self.report_error(
            InputError(
                room=msg.room[:64],
                time=self.clock.now(),
                stage=self.name,
                input_topic=msg.topic()[:128],
                reason=reason[:500],
            )
        )

    async def report_error(self, err: InputError, publish: Callable[[Message], Awaitable[None]] | None = None) -> None:
        """Publish ``err`` unless one like it (same input topic and kind of reason) went out within a second.

        The first goes out at once; the ones held back are counted into the next one's
        ``suppressed`` (or into a summary from ``flush_errors``), so a broken edge cannot flood the log.
        """
        held = self.errors.admit((err.input_topic, kind_of(err.reason)), err)
        if held is None:
            return
        err.suppressed = held
        more = f" ({held} more like it not reported)" if held else ""
        self.log.warning("%s rejected %s: %s%s", err.stage, err.input_topic, err.reason, more)
        await (publish or self.publish)(err)

    async def flush_errors(self, publish: Callable[[Message], Awaitable[None]] | None = None) -> None:
        """Publish a summary for each kind of error that was held back and went quiet (call it once a second)."""
        for err, held in self.errors.due():
            err.suppressed = held
            self.log.warning("%s rejected %s: %s (and %d more like it)", err.stage, err.input_topic, err.reason, held)
            await (publish or self.publish)(err)

    def close(self) -> None:
        """Stop the stage's worker thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def lower_priority(nice: int) -> None:
    """Lower the calling thread's scheduling priority by ``nice`` (Linux: per thread; elsewhere nothing)."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))


class Library(NamedTuple):
    """A library a stage needs, as ``sensorium doctor`` checks it."""

    module: str
    """Module to find (``faster_whisper``)."""
    install: str
    """What to install when it is missing (``faster-whisper (sensorium[workers])``)."""


class StageOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every stage's ``Options``: unknown keys are refused and every ``Duration`` field is decoded to
    seconds when the deployment file loads (naming the key), not when the stage starts."""

    def __post_init__(self) -> None:
        decode_durations(self)

    def seconds(self, key: str) -> float:
        """The ``Duration`` option ``key`` in seconds (decoded when the options loaded)."""
        return float(getattr(self, key))


class NoOptions(StageOptions):
    """Options of a stage that has none."""


class Stage(abc.ABC):
    """Base class of every stage in ``nodes/``."""

    Options: ClassVar[type[msgspec.Struct]] = NoOptions
    """The stage's options struct: its ``[stages.<name>]`` table, validated (unknown keys refused)."""
    name: ClassVar[str] = ""
    """Stage name used in the config's placement ("wake", "stt" …)."""
    consumes: ClassVar[tuple[type[Message], ...]] = ()
    """Message classes it takes, e.g. ``(AudioChunk,)``; it subscribes to their topic families (``topics()``)."""
    emits: ClassVar[tuple[type[Message], ...]] = ()
    """Message classes it publishes (the stage graph: ``sensorium graph``, the load-time check)."""
    answers: ClassVar[tuple[type[Message], ...]] = ()
    """The outputs that are its answers: replay reports measure the stage's latency on them."""
    libraries: ClassVar[tuple[Library, ...]] = ()
    """Model libraries it needs; ``sensorium doctor`` checks they import before loading the stage."""
    droppable: ClassVar[bool] = False
    """True if late input may be dropped (latest frame wins); never for audio inside an utterance."""
    degrade_steps: ClassVar[tuple[str, ...]] = ()
    """Ordered cheaper modes, applied one by one while the stage overruns its budget."""
    default_budget_ms: ClassVar[float] = 1000.0
    """Budget when the config sets none."""
    reports_latency: ClassVar[bool] = False
    """True if the stage reports its outputs' latency itself (``ctx.report``) instead of per input."""
    max_batch: ClassVar[int] = 1
    """Most inputs handed to ``handle_batch`` at once (e.g. one frame per camera per tick)."""
    serves: ClassVar[str] = "house"
    """Streams it serves, which placement hands to one worker each: "room" (a room's microphone audio),
    "camera", or "house" (one stream for the whole house)."""
    nice: ClassVar[int] = 0
    """How much lower its threads run than voice's (Linux nice): vision stages set 10, so when the cores are
    short the wake word, STT and speaker ID get them first and vision falls behind (and degrades) first."""
    takeover_s: ClassVar[float] = 0.0
    """Seconds of input a standby keeps per stream it does not serve, replayed when it takes one over
    (an utterance in flight survives its worker); 0 keeps none. Only what came after the ``t1`` of the
    last result event the serving worker published is replayed, so a stage that sets it must put the end
    of what each final result covers in ``t1`` (STT's final transcripts do)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for attr in ("consumes", "emits", "answers"):
            for m in getattr(cls, attr):
                if not (isinstance(m, type) and issubclass(m, Message) and m.kind):
                    raise TypeError(f"stage {cls.__name__}.{attr}: {m!r} is not a message class of pipeline.messages")
        if not set(cls.answers) <= set(cls.emits):
            raise TypeError(f"stage {cls.__name__}: answers {cls.answers} must be among what it emits")

    @classmethod
    def topics(cls) -> tuple[str, ...]:
        """Topic prefixes it subscribes to: the families of what it consumes (``("audio/",)``)."""
        return tuple(dict.fromkeys(f"{m.kind}/" for m in cls.consumes))

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        ctx.nice = max(ctx.nice, type(self).nice)
        self.level = 0
        """How many degrade steps are applied now."""

    async def start(self) -> None:
        """Load models (through ``ctx.run_blocking``); called once before the first input."""

    @abc.abstractmethod
    async def handle(self, msg: Message) -> None:
        """Process one input; publish results with ``ctx.publish``."""

    async def handle_batch(self, msgs: list[Message]) -> None:
        """Process several pending inputs at once (batched inference); default: one by one."""
        for msg in msgs:
            await self.handle(msg)

    async def stop(self) -> None:
        """Release resources."""

    def apply_degrade(self, level: int) -> None:
        """Switch to degrade ``level`` (0 = full quality; k = the first k steps applied)."""
        self.level = level

    def input_time(self, msg: Message) -> float:
        """Capture time the latency of handling ``msg`` is measured from.

        For audio that is the end of the chunk: the stage cannot answer before the sound exists.
        """
        if isinstance(msg, AudioChunk):
            return msg.time + msg.seconds
        return msg.time
