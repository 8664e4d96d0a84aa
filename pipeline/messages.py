"""Every message that crosses the bus: streams, events, commands and control.

Each class is a msgspec Struct tagged with its public ``type`` name; ``pipeline.codec`` is the one
codec for all of them. Times are seconds on the hub's clock (``pipeline.clock``), so latencies
measured on different machines compare. Raw media (PCM, JPEG) travels in ``data``, which the codec
puts in its own ZeroMQ frame and never re-encodes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import msgspec
import numpy as np

#: Version of the header layout; a receiver rejects any other.
WIRE_VERSION = 1


class Message(msgspec.Struct, tag_field="type", kw_only=True):
    """Fields every message carries."""

    #: Topic family: the first segment of the topic (``audio``, ``wake``, ``say`` …); the message's public
    #: ``type`` for every message on the bus (one name on the wire; control messages travel as ``ctl``).
    kind: ClassVar[str] = ""
    #: The topic family this message had before it took its ``type`` name (``status`` for ``node_status``):
    #: during the transition a message on its old topic, from a peer not updated yet (an edge updated later),
    #: is still accepted (``pipeline.codec.decode``) and subscribed to (``pipeline.bus.Subscriber``).
    old_kind: ClassVar[str] = ""
    #: Also published under ``old_kind`` during the transition, for peers not updated yet that subscribe to
    #: it (an edge plays ``tts``/``stop``); subscribers of this version drop that copy. Costs nothing while no
    #: old peer subscribes: libzmq drops a message nobody subscribed to at the publisher.
    old_copy: ClassVar[bool] = False
    #: True for messages kept in the hub's event log and given hub sequence numbers.
    is_event: ClassVar[bool] = False
    #: False for what a client makes itself (``EventsLost``): never published, so never logged from a publisher.
    on_bus: ClassVar[bool] = True

    seq: int = 0
    """Sender's sequence number on its topic; events are re-numbered by the hub's log."""
    time: float = 0.0
    """Capture time of the input this message describes, seconds on the hub's clock."""
    room: str = ""
    """Room the message belongs to ("" for house-wide messages)."""
    source: str = ""
    """Name of the edge node, camera or stage that sent it."""

    def topic(self) -> str:
        """The bus topic: ``kind/room/source``; subscribers filter on prefixes of it."""
        return f"{self.kind}/{self.room or '-'}/{self.source or '-'}"


class Stream(Message):
    """Media and measurements on the bus (audio, video, utterances, synthesized speech, stage stats); not logged."""


class Command(Message):
    """An instruction to stages or edges (speak, stop, listen); recorded with the events, not logged."""


class Control(Message):
    """A request or answer on the hub's control socket; never on the bus."""


# --------------------------------------------------------------------------------------- streams


class AudioChunk(Stream, tag="audio"):
    """A block of microphone audio from an edge node."""

    kind: ClassVar[str] = "audio"
    rate: int = 16000
    """Sample rate in Hz."""
    channels: int = 1
    """Interleaved channels."""
    data: bytes = b""
    """Signed 16-bit little-endian PCM."""
    reference: bytes = b""
    """What the room's loudspeaker played while this chunk was captured, as mono 16-bit PCM at ``rate``
    sample-aligned with ``data`` (empty when it played nothing): the wake stage's own-voice check."""
    echo_cancelled: bool = False
    """The edge removed the echo of ``reference`` from ``data`` (``[edges.X.microphone] echo_cancel``)."""

    def pcm(self) -> np.ndarray:
        """The samples as int16 (a read-only view of ``data``; interleaved when ``channels`` > 1)."""
        return np.frombuffer(self.data, dtype="<i2")

    def reference_pcm(self) -> np.ndarray:
        """``reference`` as int16 (empty when nothing played)."""
        return np.frombuffer(self.reference, dtype="<i2")

    @property
    def seconds(self) -> float:
        """How much audio the chunk holds (0 for a rate of 0)."""
        return len(self.data) / (2 * max(self.channels, 1) * self.rate) if self.rate > 0 else 0.0


class VideoFrame(Stream, tag="video"):
    """One camera frame."""

    kind: ClassVar[str] = "video"
    width: int = 0
    """Frame width in pixels."""
    height: int = 0
    """Frame height in pixels."""
    encoding: Literal["jpeg"] = "jpeg"
    """Encoding of ``data``."""
    data: bytes = b""
    """The encoded image."""


class Utterance(Stream, tag="utterance"):
    """The audio of one command (pre-wake buffer included), for speaker ID: at each pause in the speech
    the audio so far (``partial``), at the endpoint all of it."""

    kind: ClassVar[str] = "utterance"
    utterance_id: str = ""
    """Identifier shared by the transcript and speaker events of this utterance."""
    t0: float = 0.0
    """Start of the audio, hub clock."""
    t1: float = 0.0
    """End of the audio (the endpoint), hub clock."""
    rate: int = 16000
    """Sample rate in Hz."""
    data: bytes = b""
    """Signed 16-bit little-endian mono PCM."""
    partial: bool = False
    """The audio so far, sent at a pause while the person may still go on (speaker ID embeds it before the
    endpoint); the endpoint's Utterance of the same id follows."""
    covered: int = 0
    """At the endpoint: the sample count of the last partial of this utterance when no speech came after it
    (its speaker embedding stands for the whole utterance); 0 = none."""

    def pcm(self) -> np.ndarray:
        """The samples as int16 (a read-only view of ``data``)."""
        return np.frombuffer(self.data, dtype="<i2")


class TtsAudio(Stream, tag="tts_audio"):
    """A chunk of synthesized speech for a room's speaker."""

    kind: ClassVar[str] = "tts_audio"
    old_kind: ClassVar[str] = "tts"
    old_copy: ClassVar[bool] = True
    answer_id: str = ""
    """The answer this audio belongs to (from ``Say``)."""
    chunk: int = 0
    """Index of this chunk within the answer."""
    text: str = ""
    """The sentence this chunk speaks."""
    rate: int = 16000
    """Sample rate in Hz."""
    final: bool = False
    """True on the answer's last chunk."""
    data: bytes = b""
    """Signed 16-bit little-endian mono PCM."""


# ---------------------------------------------------------------------------------------- events


class Word(msgspec.Struct):
    """One recognized word with its time span."""

    word: str
    """The word as spoken."""
    start: float
    """Start, seconds from the start of the utterance."""
    end: float
    """End, seconds from the start of the utterance."""
    probability: float = 1.0
    """Recognizer confidence 0–1."""


class Box(msgspec.Struct):
    """A person box in pixel coordinates of the frame."""

    x1: float
    """Left edge."""
    y1: float
    """Top edge."""
    x2: float
    """Right edge."""
    y2: float
    """Bottom edge."""
    score: float
    """Detector confidence 0–1; 0 for a counted person missed in this frame (kept at their last box for a few
    frames while the detector looks for them again)."""
    track: int = -1
    """Tracker id, stable per camera while the person stays in view (-1 while not counted: untracked, or a track
    found in too few frames yet)."""


class Event(Message):
    """A fact for the reasoning loop: logged and sequenced by the hub."""

    is_event: ClassVar[bool] = True


class WakeDetected(Event, tag="wake"):
    """A wake word was heard."""

    kind: ClassVar[str] = "wake"
    word: str = ""
    """Name of the wake word model that fired."""
    score: float = 0.0
    """Model score 0–1 at detection."""
    level: float = 0.0
    """Audio level around the detection, dBFS (for room arbitration)."""
    node: str = ""
    """Edge node whose microphone heard it."""


class Transcript(Event, tag="transcript"):
    """Speech-to-text result for an utterance: partial while speaking, then final."""

    kind: ClassVar[str] = "transcript"
    utterance_id: str = ""
    """Identifier shared with the utterance's speaker event."""
    final: bool = False
    """False for partials, True once at the endpoint."""
    text: str = ""
    """The transcript so far (partials) or the whole utterance (final)."""
    words: list[Word] = msgspec.field(default_factory=list)
    """Words with timings (final only)."""
    t0: float = 0.0
    """Start of the utterance, hub clock."""
    t1: float = 0.0
    """End of the utterance (endpoint), hub clock; 0 for partials."""
    speaker: str | None = None
    """Who spoke: a person's name, "unknown", or None if not (yet) identified."""
    speaker_score: float = 0.0
    """Similarity score behind ``speaker``."""
    request_id: str = ""
    """Set when a client asked for this transcript (``Listen``: Home Assistant's STT); agents do not answer it."""
    reply_to: str = ""
    """Set on a question a client asks for someone (Home Assistant's conversation): answer with ``Client.answer``."""


class SpeakerIdentified(Event, tag="speaker"):
    """Who spoke an utterance."""

    kind: ClassVar[str] = "speaker"
    utterance_id: str = ""
    """The utterance this identifies."""
    person: str = "unknown"
    """Enrolled person's name, or "unknown"."""
    score: float = 0.0
    """Cosine similarity to the best enrolled voice."""


class Detections(Event, tag="detections"):
    """People seen in one camera frame."""

    kind: ClassVar[str] = "detections"
    camera: str = ""
    """Camera that took the frame."""
    persons: int = 0
    """People counted in the frame: tracks confirmed over a few frames (boxes with ``track`` >= 0)."""
    boxes: list[Box] = msgspec.field(default_factory=list)
    """One box per person; a box whose track is not confirmed yet has ``track`` -1 and does not count."""
    frame_seq: int = 0
    """``seq`` of the frame these come from."""


class FaceRecognized(Event, tag="face"):
    """A face on a person track was recognized (once per track; again on a better face or back in view)."""

    kind: ClassVar[str] = "face"
    camera: str = ""
    """Camera that saw the face."""
    person: str = "unknown"
    """Enrolled person's name, or "unknown"."""
    score: float = 0.0
    """Cosine similarity to the best enrolled face."""
    track: int = -1
    """Person track the face belongs to."""


class Presence(Event, tag="presence"):
    """A person's presence in a room changed, or is confirmed (``present``)."""

    kind: ClassVar[str] = "presence"
    person: str = ""
    """Enrolled person's name, or "unknown" for the unknown-people count."""
    state: Literal["entered", "present", "left"] = "present"
    """What happened."""
    confidence: float = 0.0
    """Confidence 0–1 from the evidence behind it."""
    sources: list[str] = msgspec.field(default_factory=list)
    """Evidence kinds: "face", "voice", "track"."""
    people: int = 0
    """People in the room now: the named people present plus ``unknown``."""
    unknown: int = 0
    """Unknown people in the room now: counted person tracks (seen over a few frames) that no face named, less
    the people present by voice alone."""


class BudgetViolation(Event, tag="budget_violation"):
    """A stage answered later than its latency budget."""

    kind: ClassVar[str] = "budget_violation"
    old_kind: ClassVar[str] = "budget"
    stage: str = ""
    """Stage name."""
    budget_ms: float = 0.0
    """The stage's budget."""
    actual_ms: float = 0.0
    """Measured latency from the input's capture time."""
    action: str = ""
    """What the runtime did: "none", "dropped", "degraded:<step>", "restored:<step>"."""


class NodeStatus(Event, tag="node_status"):
    """A node came up, went down, degraded or reported a problem."""

    kind: ClassVar[str] = "node_status"
    old_kind: ClassVar[str] = "status"
    node: str = ""
    """Node name."""
    role: str = ""
    """"edge", "worker", "hub", "client"."""
    state: Literal["up", "down", "degraded", "error"] = "up"
    """The node's state."""
    detail: str = ""
    """Human-readable reason."""
    offset_ms: float = 0.0
    """Estimated offset of the node's clock from the hub's."""


class InputError(Event, tag="error"):
    """Input was rejected; the stage kept serving everything else."""

    kind: ClassVar[str] = "error"
    stage: str = ""
    """Stage or node that rejected it."""
    input_topic: str = ""
    """Topic of the rejected input."""
    reason: str = ""
    """What was wrong."""
    suppressed: int = 0
    """Errors like this one (same stage or node, input topic and kind) left out since the last one reported."""


class PlaybackStatus(Event, tag="playback"):
    """An edge node started, finished or stopped playing an answer."""

    kind: ClassVar[str] = "playback"
    answer_id: str = ""
    """The answer being played."""
    state: Literal["started", "ended", "stopped"] = "started"
    """What happened."""
    played_text: str = ""
    """Sentences fully played so far (tells the agent what was cut off on barge-in)."""


class EventsLost(Event, tag="events_lost"):
    """Events the hub's log no longer held when this subscriber asked for them (it was away too long).

    Its ``seq`` is ``last_seq``: persist it like any event's and resuming continues after the gap.
    """

    kind: ClassVar[str] = "events_lost"
    old_kind: ClassVar[str] = "lost"
    on_bus: ClassVar[bool] = False
    first_seq: int = 0
    """First sequence number lost."""
    last_seq: int = 0
    """Last sequence number lost (lost events of types or rooms not asked for are counted too)."""
    epoch: str = ""
    """Set when the hub's log was replaced (another epoch): numbers restart after this item's seq; persist it too."""


class Placement(Event, tag="placement"):
    """A stream of a stage was handed to another worker (or to its first, or to none)."""

    kind: ClassVar[str] = "placement"
    stage: str = ""
    """Stage name."""
    stream: str = ""
    """What moved: a room (microphone stages), a camera (camera stages) or "*" (house-wide stages)."""
    from_worker: str = ""
    """Worker that served it ("" when none did)."""
    to_worker: str = ""
    """Worker that serves it now ("" when no worker can)."""
    reason: str = ""
    """Why: "start", "down", "drained", "degraded", "handback", "balance" or "none-left"."""


class McpCall(Event, tag="mcp_call"):
    """An LLM agent called a tool of the MCP server (``sensorium mcp``): the household sees what agents did."""

    kind: ClassVar[str] = "mcp_call"
    old_kind: ClassVar[str] = "mcp"
    tool: str = ""
    """The tool called."""
    client: str = ""
    """Who called: the MCP client's name and version as it introduced itself, and its transport and address."""
    arguments: str = ""
    """The call's arguments as JSON (cut at 500 characters)."""
    ok: bool = True
    """False when the call was refused or failed."""
    error: str = ""
    """Why it was refused or failed ("" when ok)."""
    duration_ms: float = 0.0
    """How long the call took."""


# -------------------------------------------------------------------------------------- commands


class Say(Command, tag="say"):
    """Speak text in a room (or wherever a person is)."""

    kind: ClassVar[str] = "say"
    answer_id: str = ""
    """Identifier of the answer; several ``Say`` with one id stream one answer."""
    text: str = ""
    """Text to speak (a piece of the answer when streaming)."""
    person: str = ""
    """Speak wherever this person is now (used when ``room`` is empty)."""
    voice: str | None = None
    """Voice name or path; None for the stage's default."""
    more: bool = False
    """True while more text for this answer will follow."""
    reply_to: str = ""
    """The question's ``reply_to`` when the asker speaks the answer itself: the TTS stage sends audio to no room."""


class StopPlayback(Command, tag="stop_playback"):
    """Stop speaking in a room (barge-in, or the agent changed its mind)."""

    kind: ClassVar[str] = "stop_playback"
    old_kind: ClassVar[str] = "stop"
    old_copy: ClassVar[bool] = True
    answer_id: str = ""
    """Answer to stop; "" stops whatever is playing."""
    reason: str = ""
    """Why, e.g. "barge-in"."""


class StartConversation(Command, tag="start_conversation"):
    """Speak ``text`` in a room (or wherever ``person`` is), then listen there without a wake word.

    ``sensorium esphome`` carries it out: our TTS says the prompt, and when the room's edge has played it
    the room's ESPHome device starts Home Assistant's pipeline, so the answer goes to HA's agent.
    """

    kind: ClassVar[str] = "start_conversation"
    answer_id: str = ""
    text: str = ""
    """The prompt ("Welcome home. Anything I can do?")."""
    person: str = ""
    """Address this person wherever they are now (used when ``room`` is empty)."""
    cooldown: float = 0.0
    """Seconds: not again for a person addressed (or greeted) within this long; 0 = always."""


class PlaybackGain(Command, tag="playback_gain"):
    """Set how loud a room's edge plays (Home Assistant's media player volume and mute for the room)."""

    kind: ClassVar[str] = "playback_gain"
    volume: float = 1.0
    """0 … 1: the edge scales the samples it plays by this (linear amplitude)."""
    muted: bool = False
    """Muted: the edge plays silence (answers still run their course and report ended)."""


class Listen(Command, tag="listen"):
    """A client claims the speech of one audio stream, from ``time`` on (the Wyoming gateway for Home Assistant)."""

    kind: ClassVar[str] = "listen"
    node: str = ""
    """The stream: ``source`` of its audio chunks (an edge node, or a stream the gateway publishes)."""
    action: Literal["open", "close", "drop"] = "open"
    """"open" takes the utterance opened near ``time`` or opens one there; "close" ends it now; "drop" discards it."""
    request_id: str = ""
    """The client's request; the utterance's transcripts carry it as ``Transcript.request_id``."""


class StageStats(Stream, tag="stats"):
    """A worker's periodic numbers for one stage (for ``sensorium top``; not logged)."""

    kind: ClassVar[str] = "stats"
    stage: str = ""
    """Stage name."""
    inputs: int = 0
    """Inputs handled since start."""
    rate: float = 0.0
    """Inputs per second over the last interval."""
    p50_ms: float = 0.0
    """Median latency over recent inputs."""
    p95_ms: float = 0.0
    """95th percentile latency over recent inputs."""
    budget_ms: float = 0.0
    """The stage's budget."""
    dropped: int = 0
    """Inputs dropped since start."""
    violations: int = 0
    """Budget violations since start."""
    queue: int = 0
    """Inputs waiting now."""
    level: int = 0
    """Degrade steps applied now."""
    device: str = ""
    """Device the stage runs on."""
    cpu_pct: float = 0.0
    """Share of one core the stage's own threads used over the last interval, in %."""
    loop_lag_ms: float = 0.0
    """The worker's event-loop lag over the last interval, p99 (the same on each of its stages)."""
    loop_cpu_pct: float = 0.0
    """Share of one core the worker's event-loop thread used over the last interval, in %."""
    library_cpu_pct: float = 0.0
    """Share of one core the worker's other threads (library pools) used over the last interval, in %."""


class Assignment(msgspec.Struct):
    """Which worker serves one stream of one stage."""

    stage: str
    """Stage name."""
    stream: str
    """A room, a camera, or "*" for a house-wide stage."""
    worker: str
    """Worker that serves it ("" when none can)."""


class PlacementTable(Stream, tag="placement_table"):
    """The hub's assignment of streams to workers: on the bus at every change and each second, and as the
    answer to ``PlacementRequest`` (not logged; the ``placement`` events are the audit trail)."""

    kind: ClassVar[str] = "placement_table"
    old_kind: ClassVar[str] = "assign"
    epoch: str = ""
    """Changes when the hub restarts (its versions start again)."""
    version: int = 0
    """Increases with every change within an epoch (workers ignore an older table)."""
    assignments: list[Assignment] = msgspec.field(default_factory=list)
    """One entry per stage and stream of every stage placed on more than one worker."""
    live: list[str] = msgspec.field(default_factory=list)
    """Workers the hub hears from now."""
    drained: list[str] = msgspec.field(default_factory=list)
    """Workers drained (``sensorium placement drain``)."""
    busy: list[str] = msgspec.field(default_factory=list)
    """Streams with an utterance in flight now (``stage/stream``), which move only once it ends."""
    request_id: int = 0
    """The ``request_id`` of the request this answers (0 on the bus)."""


# --------------------------------------------------------------------------------------- control


class Register(Control, tag="register"):
    """A node introduces itself to the hub."""

    kind: ClassVar[str] = "ctl"
    node: str = ""
    """Node name, unique in the deployment."""
    role: str = ""
    """"edge", "worker", "client"."""
    stages: list[str] = msgspec.field(default_factory=list)
    """Stages the node runs (workers) or streams it publishes (edges)."""
    instance: str = ""
    """A random id of this process's link, never shown to other peers: the same process back on a new
    connection keeps its name; another process asking for a name in use is refused while the first lives."""


class Heartbeat(Control, tag="heartbeat"):
    """A node's periodic liveness and clock probe."""

    kind: ClassVar[str] = "ctl"
    node: str = ""
    """Node name."""
    sent: float = 0.0
    """Node's local monotonic clock when sent."""
    offset_ms: float = 0.0
    """The node's current estimate of its offset to the hub."""
    detail: str = ""
    """Optional state, e.g. "degraded: stt -> tiny"."""
    exhausted: list[str] = msgspec.field(default_factory=list)
    """Stages on the last step of their degrade ladder here: the hub moves their streams elsewhere if it can."""
    serving: list[str] = msgspec.field(default_factory=list)
    """Stages loaded and fed here (a worker; empty while its models load): only these get streams."""
    leaving: bool = False
    """The node is closing its link: its name is free at once (not only after ``down_after``)."""


class HeartbeatAck(Control, tag="heartbeat_ack"):
    """The hub's answer to a heartbeat."""

    kind: ClassVar[str] = "ctl"
    sent: float = 0.0
    """The heartbeat's ``sent``, echoed."""
    hub_time: float = 0.0
    """Hub clock when the heartbeat arrived."""


class EventsRequest(Control, tag="events_request"):
    """Ask the hub's log for the events after ``since`` (a resuming subscriber)."""

    kind: ClassVar[str] = "ctl"
    since: int = 0
    """Last hub sequence number the subscriber has; 0 for everything in the log."""
    prefixes: list[str] = msgspec.field(default_factory=list)
    """Topic prefixes to return; empty for all (at most 64, each at most 128 bytes)."""
    request_id: int = 0
    """Identifier the requester chose; the hub's answer carries it back (retries reuse it)."""


class EventsReply(Control, tag="events_reply"):
    """The hub's answer to ``EventsRequest``: logged events, oldest first."""

    kind: ClassVar[str] = "ctl"
    events: list[bytes] = msgspec.field(default_factory=list)
    """Each event encoded as its public JSON."""
    first_seq: int = 0
    """Oldest sequence number still in the log (a gap before it was lost to the bound)."""
    last_seq: int = 0
    """Newest sequence number in the log."""
    request_id: int = 0
    """The ``request_id`` of the request this answers."""
    epoch: str = ""
    """The log's random id, made with it: another epoch means the log was replaced and its numbers restarted."""


class SnapshotRequest(Control, tag="snapshot_request"):
    """Ask who is where now; the hub answers from the latest ``presence`` events in its log."""

    kind: ClassVar[str] = "ctl"
    request_id: int = 0
    """Identifier the requester chose; the hub's answer carries it back (retries reuse it)."""


class PlacementRequest(Control, tag="placement_request"):
    """Ask the hub for its placement table, or drain or undrain a worker (answered with ``PlacementTable``)."""

    kind: ClassVar[str] = "ctl"
    action: Literal["get", "drain", "undrain"] = "get"
    """What to do: "get" only answers; "drain" moves every stream off ``worker`` at its next boundary."""
    worker: str = ""
    """The worker to drain or undrain."""
    request_id: int = 0
    """Identifier the requester chose; the hub's answer carries it back (retries reuse it)."""


class ControlError(Control, tag="control_error"):
    """The hub refused a control message."""

    kind: ClassVar[str] = "ctl"
    reason: str = ""
    """What was wrong."""
    request_id: int = 0
    """The ``request_id`` of the request refused (0 when the message was unreadable or not a request)."""


# ------------------------------------------------------------------------------------ arbitration


class WakeArbitrated(Event, tag="arbitration"):
    """One wake word heard by several nodes (or by a room's own speaker): who answers, who stands down."""

    kind: ClassVar[str] = "arbitration"
    word: str = ""
    """The wake word."""
    node: str = ""
    """Winning node, whose room gets the answer ("" when every detection was the rooms' own speech)."""
    score: float = 0.0
    """Winner's wake score."""
    level: float = 0.0
    """Winner's audio level, dBFS."""
    wake_time: float = 0.0
    """Capture time of the winning detection, hub clock (matches its ``WakeDetected.time``)."""
    losers: list[str] = msgspec.field(default_factory=list)
    """Nodes that heard the same wake word and must stand down (drop the utterance they opened)."""
    loser_rooms: list[str] = msgspec.field(default_factory=list)
    """Rooms of ``losers``, same order."""
    echo: list[str] = msgspec.field(default_factory=list)
    """Subset of ``losers`` whose detection was taken for the room's own TTS playback."""


def _family(base: type[Message]) -> tuple[type[Any], ...]:
    """The message classes of ``base``'s family defined here, in the order they are defined.

    Families come from the class hierarchy, so a new message class is in its family (and the codec,
    the hub's event tap, the docs) by being defined, with no list to update.
    """
    return tuple(
        v
        for v in list(globals().values())
        if isinstance(v, type) and issubclass(v, base) and v not in (base, Event, Stream, Command, Control)
    )


STREAMS: tuple[type[Stream], ...] = _family(Stream)
EVENTS: tuple[type[Event], ...] = tuple(c for c in _family(Event) if c.on_bus)
CLIENT_EVENTS: tuple[type[Event], ...] = tuple(c for c in _family(Event) if not c.on_bus)
"""Events ``Client.events()`` makes itself; never on the bus, so the hub never logs one from a publisher."""
COMMANDS: tuple[type[Command], ...] = _family(Command)
CONTROL: tuple[type[Control], ...] = _family(Control)
ALL: tuple[type[Message], ...] = STREAMS + EVENTS + CLIENT_EVENTS + COMMANDS + CONTROL
BY_TAG: dict[str, type[Message]] = {cls.__struct_config__.tag: cls for cls in ALL}  # type: ignore[misc]
EVENT_KINDS: tuple[str, ...] = tuple(cls.kind for cls in EVENTS)
OLD_KINDS: dict[str, str] = {cls.kind: cls.old_kind for cls in ALL if cls.old_kind}
"""Topic family → the one it had before it took its message's ``type`` name (accepted during the transition)."""
OLD_COPY_PREFIXES: tuple[bytes, ...] = tuple(f"{cls.old_kind}/".encode() for cls in ALL if cls.old_copy)
"""Topic prefixes of the copies published for peers not updated yet; subscribers of this version drop them."""


def old_topic(msg: Message) -> str:
    """``msg``'s topic under its old family (the transition); "" if it has none."""
    old = type(msg).old_kind
    return f"{old}/{msg.room or '-'}/{msg.source or '-'}" if old else ""
