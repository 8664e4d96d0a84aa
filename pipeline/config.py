"""The deployment file: hub endpoints, rooms, edge nodes, workers, placement and budgets.

One TOML file describes the whole house. Loading validates everything and raises ``ConfigError``
naming the file, the key and what was expected; a one-box deployment and a four-GPU one differ only
in ``[workers.*].stages``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

import msgspec

T = TypeVar("T")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class ConfigError(ValueError):
    """The deployment file is invalid; the text names the file, the key and what was expected."""


def parse_duration(value: str | float | int, key: str = "duration") -> float:
    """``"200ms"``, ``"1.5s"``, ``"2m"`` or a number of seconds → seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration like '200ms' or '1.5s', got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{key}: duration must not be negative, got {value!r}")
        return float(value)
    m = _DURATION.match(str(value))
    if not m:
        raise ConfigError(f"{key}: expected a duration like '200ms', '1.5s' or '2m', got {value!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


Duration: TypeAlias = str | float
"""A field that is a time span: ``"200ms"``, ``"1.5s"``, ``"2m"``, ``"7d"`` or a number of seconds in the file.

Decoded once, when the table loads (``decode_durations``, from ``__post_init__``): after that the field holds
seconds as a float, so no reader parses it again, and a bad value fails the load naming its table and key."""


def durations(cls: type[msgspec.Struct]) -> tuple[str, ...]:
    """The fields of a config or options struct declared as ``Duration``."""
    out = []
    for k in reversed(cls.__mro__):
        for name, ann in getattr(k, "__annotations__", {}).items():
            if ann == "Duration" or ann is Duration:
                out.append(name)
    return tuple(dict.fromkeys(out))


def decode_durations(obj: msgspec.Struct) -> None:
    """Replace every ``Duration`` field of ``obj`` by its seconds (``ConfigError`` naming the key if invalid)."""
    for key in durations(type(obj)):
        setattr(obj, key, parse_duration(getattr(obj, key), key))


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A table of the file: unknown keys refused, ``Duration`` fields decoded to seconds when it loads."""

    def __post_init__(self) -> None:
        decode_durations(self)


class HubConfig(_Strict):
    """Where the hub listens and how it judges node health."""

    address: str = "ipc:///tmp/sensorium"
    """Base endpoint; the four sockets derive from it (tcp: port+0..3; ipc/inproc: suffixes)."""
    heartbeat: Duration = "500ms"
    """Interval between node heartbeats."""
    down_after: Duration = "2s"
    """A node that sent no heartbeat for this long is reported down."""
    event_log: int = 10000
    """Events kept for subscribers that reconnect."""
    event_log_bytes: int = 32 * 1024 * 1024
    """Most bytes of events kept (in memory; the file holds up to about twice as much between compactions):
    the oldest go first when either this or ``event_log`` is reached."""
    metrics_port: int = 0
    """Prometheus port of the hub (0 = off)."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint listens on: loopback by default (it has no authentication);
    "0.0.0.0" or a LAN address to scrape it from another machine (firewall it)."""
    keys: str = ""
    """Folder with the hub's CURVE key pair and enrolled client keys (required off loopback)."""
    allow_insecure: bool = False
    """Explicitly allow a non-loopback bind without CURVE (not recommended)."""
    record: str = ""
    """MCAP file to record the bus into ("" = off)."""
    takeover_after: Duration = "1s"
    """A worker silent this long loses its streams to the next worker of their stage (placement; before
    ``down_after`` on purpose: a missed utterance costs more than a stream moved back later)."""
    handback_after: Duration = "10s"
    """A returning preferred worker gets its streams back only after it has been up this long, and only
    at an utterance or frame boundary (hysteresis: a flapping node does not bounce streams)."""


class RoomConfig(_Strict):
    """A room of the house."""

    speaker: str = ""
    """Edge node that plays answers in this room ("" = the room's first edge node)."""


class MicrophoneConfig(_Strict):
    """Audio capture on an edge node."""

    device: str | int | None = None
    """sounddevice input device (name or index; None = system default)."""
    file: str = ""
    """Play this WAV in real time instead of a microphone (tests, demos)."""
    rate: int = 16000
    """Sample rate published on the bus."""
    block_ms: int = 80
    """Audio chunk length."""
    local_wake: bool = False
    """Stream only around a locally detected wake word (with pre-roll)."""
    preroll_ms: int = 1500
    """Audio kept before a local wake detection."""
    hold_ms: int = 8000
    """With local_wake: audio streamed after the last detection."""
    wake_models: list[str] = msgspec.field(default_factory=lambda: ["hey_jarvis"])
    """With local_wake: wake words (bundled names or .onnx/.tflite paths), the same the workers use."""
    reference_file: str = ""
    """With ``file``: what the room's loudspeaker played, sample-aligned with ``file`` (a simulated room that
    hears its own speaker: tests, benchmarks). Sent as the chunks' ``reference`` like the answers the player plays."""
    send_reference: bool = True
    """Send what this room's speaker plays with the microphone chunks (the wake stage's own-voice check)."""
    echo_cancel: bool = False
    """Subtract the echo of what this room's speaker plays from the microphone before sending it
    (``pipeline.aec``; needs ``send_reference``): people are heard over the playback, at ~0.5 % of a core."""
    echo_canceller: Literal["speex", "nlms"] = "speex"
    """With ``echo_cancel``: "speex" (Xiph's speexdsp canceller, the system's libspeexdsp: ``apt install
    libspeexdsp1``, which PulseAudio already depends on) or "nlms" (sensorium's numpy canceller, no library)."""
    echo_tail_ms: int = 256
    """With ``echo_cancel``: how much of the room's echo (reverberation) the canceller's filter spans."""


class CameraConfig(_Strict):
    """One camera of an edge node."""

    source: str | int = 0
    """USB device index, RTSP URL, video file, or folder of images."""
    fps: float = 5.0
    """Frames per second published."""
    width: int = 640
    """Frame width (frames are resized to it, keeping the aspect ratio)."""
    jpeg_quality: int = 80
    """JPEG quality 1–100."""
    motion_threshold: float = 0.0
    """Skip frames whose mean absolute change is below this (0 = off)."""
    motion_keepalive_s: float = 10.0
    """With motion gating, still send a frame this often so consumers know the camera lives."""


class PlaybackConfig(_Strict):
    """Where an edge node plays answers."""

    device: str | int | None = None
    """sounddevice output device (None = default)."""
    wav_dir: str = ""
    """Write answers as WAV files here instead of playing them (headless)."""
    rate: int = 22050
    """Playback sample rate."""
    jitter_ms: int = 60
    """Audio buffered before playback starts."""


class EdgeConfig(_Strict):
    """A capture agent on a Raspberry Pi."""

    room: str
    """Room the node is in."""
    microphone: MicrophoneConfig | None = None
    """Audio capture (None = no microphone)."""
    cameras: dict[str, CameraConfig] = {}
    """Cameras by name."""
    playback: PlaybackConfig | None = None
    """Speaker output (None = this node does not speak)."""
    keys: str = ""
    """Folder with this node's CURVE key pair and the hub's public key."""
    metrics_port: int = 0
    """Prometheus port (0 = off): messages and bytes published per stream kind."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint listens on: loopback by default (it has no authentication);
    "0.0.0.0" or a LAN address to scrape it from another machine (firewall it)."""


class WorkerConfig(_Strict):
    """A worker process (one per GPU container) and the stages placed on it."""

    stages: list[str]
    """Stage names this worker runs, preferred here: the hub hands their streams to this worker first
    (shared equally with other workers that also list a stage here)."""
    standby: list[str] = []
    """Stages this worker runs as a standby: models loaded, streams taken over only while no worker that
    lists the stage in ``stages`` can serve them (down, drained or on its last degrade step)."""
    device: str | list[str] = "cpu"
    """Device, or devices in order of preference ("cuda:0", then "cpu")."""
    metrics_port: int = 0
    """Prometheus port (0 = off)."""
    metrics_host: str = "127.0.0.1"
    """Address the Prometheus endpoint listens on: loopback by default (it has no authentication);
    "0.0.0.0" or a LAN address to scrape it from another machine (firewall it)."""
    keys: str = ""
    """Folder with this worker's CURVE key pair and the hub's public key."""
    max_future: Duration = "2s"
    """Audio and wake events stamped further than this ahead of the hub clock are refused (0 = accept them:
    only for a worker that ``sensorium replay --hub`` feeds faster than real time, which stamps ahead)."""

    def devices(self) -> list[str]:
        """Devices in order of preference."""
        return [self.device] if isinstance(self.device, str) else list(self.device)

    def runs(self) -> list[str]:
        """Every stage this worker loads: preferred ones, then standbys."""
        return [*self.stages, *self.standby]


_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9_-]+$")


class MqttConfig(_Strict):
    """The MQTT bridge (``sensorium mqtt``): broker, credentials, topics, Home Assistant discovery."""

    host: str = "localhost"
    """Broker host name or address."""
    port: int = 1883
    """Broker port (8883 is the usual one with TLS)."""
    username: str = ""
    """User at the broker ("" = anonymous)."""
    password_file: str = ""
    """File whose first line is the password, so the secret stays out of this file (needs ``username``)."""
    tls: bool = False
    """Connect with TLS."""
    ca_file: str = ""
    """CA certificate to verify the broker with ("" = the system's CAs; needs ``tls``)."""
    base_topic: str = "sensorium"
    """First topic level(s) of everything the bridge publishes and listens to."""
    discovery_prefix: str = "homeassistant"
    """Home Assistant's discovery prefix (its MQTT integration's setting)."""
    site: str = "home"
    """This house (letters, digits, _ and -): the topic level after ``base_topic``, so homes can share a broker."""
    client_id: str = ""
    """MQTT client id ("" = ``sensorium-<site>``); two clients with one id push each other off the broker."""
    keepalive: int = 30
    """Seconds between keepalive pings; the broker publishes the last will after 1.5 times that without one."""
    people: list[str] = []
    """Enrolled people to publish; empty = everyone in the gallery."""
    gallery: str = ""
    """Gallery to read the enrolled people from ("" = <data_dir>/gallery.db)."""
    refresh: Duration = "60s"
    """States are re-published this often while the hub answers; Home Assistant shows occupancy, people
    counts and rooms as unavailable after three intervals without one (0 = never re-publish, never expire)."""
    max_command: int = 1024
    """Largest command payload accepted, bytes."""
    keys: str = ""
    """Folder with the bridge's CURVE key pair and the hub's public key (a hub off loopback)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        # Checked when the file loads, so a mistake names [mqtt] and the key rather than failing at connect.
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if self.keepalive < 5:
            raise ValueError(f"keepalive must be at least 5 seconds, got {self.keepalive}")
        if not _TOPIC_LEVEL.match(self.site):
            raise ValueError(f"site must be letters, digits, '_' or '-' (one topic level), got {self.site!r}")
        for key in ("base_topic", "discovery_prefix"):
            value = getattr(self, key)
            if not value or any(c in value for c in "+#\0") or "" in value.split("/"):
                raise ValueError(f"{key} must be topic levels without '+', '#' or empty levels, got {value!r}")
        if self.password_file and not self.username:
            raise ValueError("password_file needs a username")
        if self.ca_file and not self.tls:
            raise ValueError("ca_file is only used with tls = true")
        if not 0 < self.max_command <= 65536:
            raise ValueError(f"max_command must be 1-65536 bytes, got {self.max_command}")


class WyomingConfig(_Strict):
    """``[wyoming]``: the Wyoming gateway (``sensorium wyoming``) that serves Home Assistant's voice."""

    name: str = "sensorium"
    """Name on the hub, in Home Assistant and in the zeroconf service names (letters, digits, '-')."""
    host: str = "0.0.0.0"
    """Address the Wyoming servers listen on."""
    wake_port: int = 10400
    """Port of the wake word service (0 = off)."""
    stt_port: int = 10300
    """Port of the speech-to-text service (0 = off)."""
    tts_port: int = 10200
    """Port of the text-to-speech service (0 = off)."""
    handle_port: int = 10500
    """Port of the conversation service: the agent attached to the hub answers (0 = off)."""
    satellites: dict[str, int] = {}
    """Room → port of its satellite (the room's microphone and loudspeaker, driven by our wake word)."""
    room: str = ""
    """Room that audio from Home Assistant's own devices counts as ("" = the first room of [rooms])."""
    zeroconf: bool = True
    """Announce every port as ``_wyoming._tcp`` so Home Assistant discovers the services by itself."""
    advertise: str = ""
    """Address announced over zeroconf ("" = this machine's address towards the LAN)."""
    speaker_prefix: bool = False
    """Put the identified speaker in front of transcripts ("[alice] turn on the lights")."""
    speaker_wait: Duration = "0.5s"
    """Longest a transcript for Home Assistant waits for its speaker when the final came without one and a
    speaker stage is up (it usually carries it: speaker ID finishes at the endpoint); "0s" = never."""
    voices: list[str] = []
    """TTS voices offered besides the tts stage's default ("flite:slt", "espeak:en-gb", a Piper .onnx …)."""
    timeout: Duration = "10s"
    """Longest wait for a stage or the agent to answer a request before an error goes back."""
    block_ms: int = 80
    """Audio from Home Assistant is published on the bus in blocks of this length."""
    max_streams: int = 8
    """Wake and speech-to-text requests from Home Assistant served at once (each is a stream on the bus)."""
    keys: str = ""
    """Folder with this client's CURVE key pair and the hub's public key."""

    def stream_names(self) -> list[str]:
        """The stream (source) names the gateway publishes Home Assistant's audio as, in ``room``."""
        return [f"{self.name}-{kind}-{i}" for kind in ("wake", "stt") for i in range(self.max_streams)]

    def ports(self) -> dict[str, int]:
        """Service role → port, for the roles that are on."""
        roles = {"wake": self.wake_port, "stt": self.stt_port, "tts": self.tts_port, "handle": self.handle_port}
        return {role: port for role, port in roles.items() if port}


class EsphomeConfig(_Strict):
    """``[esphome]``: ``sensorium esphome``, every room as an ESPHome native-API voice device for Home Assistant."""

    name: str = "sensorium"
    """Name on the hub; each device is named ``<name>-<room>`` (letters, digits, '-')."""
    host: str = "0.0.0.0"
    """Address the devices listen on."""
    rooms: dict[str, int] = {}
    """Room → port of its device ({} = every room with a microphone, from ``base_port`` on)."""
    base_port: int = 6053
    """First port when ``rooms`` is empty (6053 is ESPHome's own)."""
    key_file: str = ""
    """File holding the site's Noise key (base64, 32 bytes; created on first start; "" = no encryption)."""
    zeroconf: bool = True
    """Announce every device as ``_esphomelib._tcp`` so Home Assistant discovers it."""
    advertise: str = ""
    """Address announced over zeroconf ("" = this machine's address towards the LAN)."""
    greet: str = ""
    """Greet a known person entering a room with a device ("Welcome home, {person}."), then listen without a wake
    word in Home Assistant's pipeline ("" = off)."""
    greet_cooldown: Duration = "1h"
    """Nobody is greeted twice within this long."""

    def ports(self, mic_rooms: list[str]) -> dict[str, int]:
        """Room → port of its device."""
        if self.rooms:
            return dict(self.rooms)
        return {room: self.base_port + i for i, room in enumerate(mic_rooms)}


class ConsoleConfig(_Strict):
    """``[console]``: the web console (``sensorium console``): who is where, the timeline, the unknowns inbox."""

    host: str = "127.0.0.1"
    """Address the page listens on. Any address but loopback needs ``token_file`` or ``ingress_from``."""
    port: int = 8780
    """TCP port of the page."""
    token_file: str = ""
    """File whose first line is the access token (``Authorization: Bearer``, or ``?token=`` once, then a cookie)."""
    ingress_from: list[str] = []
    """Addresses allowed in without a token when they send Home Assistant's ``X-Ingress-Path`` (its Supervisor:
    172.30.32.2)."""
    media: bool = True
    """Keep face crops and voice clips of unknowns (false = embeddings only, like ``--no-media``)."""
    retention: Duration = "7d"
    """How long crops and clips of unknowns are kept (the embeddings stay until the cluster is dropped)."""
    clip_s: float = 5.0
    """Longest voice clip kept of an unknown utterance, seconds."""
    face_every: Duration = "10s"
    """At most one face sample per camera track this often (the face stage reports an unknown track often)."""
    keys: str = ""
    """Folder with the console's CURVE key pair and the hub's public key (a hub off loopback)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        loopback = self.host in ("localhost", "::1") or self.host.startswith("127.")
        if not loopback and not self.token_file and not self.ingress_from:
            raise ValueError(
                f"host = {self.host!r} is not loopback: set token_file (a file holding the access token) "
                "or ingress_from (Home Assistant's ingress proxy), or listen on 127.0.0.1"
            )
        if not 0 < self.clip_s <= 30:
            raise ValueError(f"clip_s must be 0-30 seconds, got {self.clip_s}")


class McpConfig(_Strict):
    """``[mcp]``: the Model Context Protocol server (``sensorium mcp``) that LLM agents call for presence and voice."""

    host: str = "127.0.0.1"
    """Address the HTTP transports (streamable HTTP on ``/mcp``, SSE on ``/sse``) listen on; any address off
    loopback needs ``token_file``."""
    port: int = 8765
    """TCP port of the HTTP transports."""
    token_file: str = ""
    """File whose first line is the bearer token clients send (``Authorization: Bearer …``); required off
    loopback, optional on it (set, every client must send it)."""
    speak: bool = True
    """Offer ``say``, ``ask`` and ``stop``; false makes a read-only server for agents that may only look."""
    name: str = "sensorium-mcp"
    """Name on the hub (and the server's name in MCP)."""
    transcripts: int = 200
    """Final transcripts kept for ``recent_transcripts``."""
    ask_timeout: Duration = "15s"
    """Longest ``ask`` waits for the answer when the agent names no timeout (at most 120 s)."""
    keys: str = ""
    """Folder with this client's CURVE key pair and the hub's public key (a hub off loopback)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if not 1 <= self.transcripts <= 100000:
            raise ValueError(f"transcripts must be 1-100000, got {self.transcripts}")
        if not 1 <= self.ask_timeout <= 120:
            raise ValueError(f"ask_timeout must be 1-120 s, got {self.ask_timeout!r}")


class DeployFile(_Strict):
    """The raw file layout; named tables are checked one by one so errors can name them."""

    hub: dict[str, Any] = {}
    rooms: dict[str, dict[str, Any]] = {}
    edges: dict[str, dict[str, Any]] = {}
    workers: dict[str, dict[str, Any]] = {}
    stages: dict[str, dict[str, Any]] = {}
    wyoming: dict[str, Any] | None = None
    data_dir: str = ".sensorium"
    mqtt: dict[str, Any] | None = None
    console: dict[str, Any] | None = None
    mcp: dict[str, Any] | None = None
    esphome: dict[str, Any] | None = None


class DeployParsed(msgspec.Struct):
    """The file with its named tables checked."""

    hub: HubConfig
    rooms: dict[str, RoomConfig]
    edges: dict[str, EdgeConfig]
    workers: dict[str, WorkerConfig]
    stages: dict[str, dict[str, Any]]
    data_dir: str
    wyoming: WyomingConfig | None = None
    mqtt: MqttConfig | None = None
    console: ConsoleConfig | None = None
    mcp: McpConfig | None = None
    esphome: EsphomeConfig | None = None


class StageSettings(msgspec.Struct):
    """A stage's validated settings."""

    budget_s: float
    """Latency budget in seconds."""
    options: Any
    """The stage's own ``Options`` struct."""


class Deployment(msgspec.Struct):
    """A validated deployment."""

    path: str
    """File it came from."""
    hub: HubConfig
    rooms: dict[str, RoomConfig]
    edges: dict[str, EdgeConfig]
    workers: dict[str, WorkerConfig]
    stages: dict[str, StageSettings]
    data_dir: Path
    wyoming: WyomingConfig | None = None
    """The Wyoming gateway's table (None when the file has no ``[wyoming]``)."""
    mqtt: MqttConfig | None = None
    """The MQTT bridge's settings (None without an ``[mqtt]`` table)."""
    console: ConsoleConfig | None = None
    """The web console's settings (None without a ``[console]`` table: its defaults apply)."""
    mcp: McpConfig | None = None
    """The MCP server's settings (None without an ``[mcp]`` table)."""
    esphome: EsphomeConfig | None = None
    """The ESPHome devices' table (None when the file has no ``[esphome]``)."""

    def worker(self, name: str) -> WorkerConfig:
        """A worker by name, or ``ConfigError`` listing the known ones."""
        if name not in self.workers:
            raise ConfigError(f"{self.path}: no worker named {name!r} (known: {', '.join(self.workers) or 'none'})")
        return self.workers[name]

    def replicas(self, stage: str) -> list[tuple[str, int]]:
        """Workers that run ``stage`` with their rank: 0 where it is preferred (``stages``), 1 as a standby."""
        out = [(n, 0) for n, w in self.workers.items() if stage in w.stages]
        return out + [(n, 1) for n, w in self.workers.items() if stage in w.standby]

    def edge(self, name: str) -> EdgeConfig:
        """An edge node by name, or ``ConfigError`` listing the known ones."""
        if name not in self.edges:
            raise ConfigError(f"{self.path}: no edge node named {name!r} (known: {', '.join(self.edges) or 'none'})")
        return self.edges[name]

    def sources(self) -> dict[str, tuple[str, ...]]:
        """Room → the audio and video sources the stages accept there: its edge nodes, and the Wyoming
        gateway's streams in the gateway's room."""
        out = {room: tuple(n for n, e in self.edges.items() if e.room == room) for room in self.rooms}
        if self.wyoming is not None and self.wyoming.room in out:
            out[self.wyoming.room] += tuple(self.wyoming.stream_names())
        return out

    def microphones(self, room: str) -> list[str]:
        """Edge nodes with a microphone in ``room``."""
        return [n for n, e in self.edges.items() if e.room == room and e.microphone is not None]

    def speaker_of(self, room: str) -> str:
        """The edge node that plays answers in ``room``."""
        chosen = self.rooms[room].speaker if room in self.rooms else ""
        if chosen:
            return chosen
        for name, edge in self.edges.items():
            if edge.room == room and edge.playback is not None:
                return name
        return next((n for n, e in self.edges.items() if e.room == room), "")


def _describe(exc: msgspec.ValidationError, table: str = "") -> str:
    """``[table] key: what was wrong`` from a msgspec validation error."""
    text = str(exc)
    m = re.search(r"- at `\$\.?(.*)`$", text)
    what = text[: m.start()].strip() if m else text
    path = ".".join(p for p in (table, m.group(1) if m else "") if p)
    path = re.sub(r"\[(\d+)\]", r".\1", path)
    unknown = re.match(r"Object contains unknown field `(.+)`", what)
    if unknown:
        return f"[{path}] unknown key {unknown.group(1)!r}" if path else f"unknown key {unknown.group(1)!r}"
    if table and not (m and m.group(1)):  # the table's own check (``__post_init__``) names its key in ``what``
        return f"[{table}] {what}"
    if "." in path:
        head, key = path.rsplit(".", 1)
        return f"[{head}] {key}: {what}"
    return f"[{path}] {what}" if path else what


def load(
    path: str | Path,
    stage_options: Mapping[str, type[msgspec.Struct]],
    default_budgets: Mapping[str, float] | None = None,
) -> Deployment:
    """Read and validate a deployment file.

    ``stage_options`` maps every known stage name to its ``Options`` struct (from the stage
    registry); ``default_budgets`` gives each stage's budget in seconds when the file sets none.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_dict(raw, stage_options, default_budgets or {}, str(path))


def from_dict(
    raw: dict[str, Any],
    stage_options: Mapping[str, type[msgspec.Struct]],
    default_budgets: Mapping[str, float] | None = None,
    path: str = "<config>",
) -> Deployment:
    """Validate an already parsed deployment (see ``load``)."""
    default_budgets = default_budgets or {}

    def convert(value: Any, typ: type[T], table: str) -> T:
        try:
            return msgspec.convert(value, typ)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path}: {_describe(exc, table)}") from None

    raw_file = convert(raw, DeployFile, "")
    edges = {}
    for name, table in raw_file.edges.items():
        cams = table.get("cameras", {})
        if not isinstance(cams, dict):
            raise ConfigError(f"{path}: [edges.{name}] cameras: expected a table of cameras")
        cameras = {c: convert(v, CameraConfig, f"edges.{name}.cameras.{c}") for c, v in cams.items()}
        edge = convert({k: v for k, v in table.items() if k != "cameras"}, EdgeConfig, f"edges.{name}")
        edge.cameras = cameras
        edges[name] = edge
    f = DeployParsed(
        hub=convert(raw_file.hub, HubConfig, "hub"),
        rooms={n: convert(t, RoomConfig, f"rooms.{n}") for n, t in raw_file.rooms.items()},
        edges=edges,
        workers={n: convert(t, WorkerConfig, f"workers.{n}") for n, t in raw_file.workers.items()},
        stages=raw_file.stages,
        data_dir=raw_file.data_dir,
        wyoming=convert(raw_file.wyoming, WyomingConfig, "wyoming") if raw_file.wyoming is not None else None,
        mqtt=convert(raw_file.mqtt, MqttConfig, "mqtt") if raw_file.mqtt is not None else None,
        console=convert(raw_file.console, ConsoleConfig, "console") if raw_file.console is not None else None,
        mcp=convert(raw_file.mcp, McpConfig, "mcp") if raw_file.mcp is not None else None,
        esphome=convert(raw_file.esphome, EsphomeConfig, "esphome") if raw_file.esphome is not None else None,
    )

    known = ", ".join(sorted(stage_options))
    for name, edge in f.edges.items():
        if edge.room not in f.rooms:
            raise ConfigError(
                f"{path}: [edges.{name}] room = {edge.room!r} is not a room of [rooms] "
                f"(known: {', '.join(f.rooms) or 'none'})"
            )
    served = {e.room for e in f.edges.values()}
    for room, rc in f.rooms.items():
        if room not in served:
            raise ConfigError(f"{path}: [rooms.{room}] no edge node serves this room (add one to [edges])")
        if rc.speaker and (rc.speaker not in f.edges or f.edges[rc.speaker].room != room):
            raise ConfigError(f"{path}: [rooms.{room}] speaker = {rc.speaker!r} is not an edge node in this room")

    if f.wyoming is not None:
        _check_wyoming(f, path)
    if f.esphome is not None:
        _check_esphome(f, path)

    placed: set[str] = set()
    for wname, w in f.workers.items():
        for key, names in (("stages", w.stages), ("standby", w.standby)):
            for s in names:
                if s not in stage_options:
                    raise ConfigError(
                        f"{path}: [workers.{wname}] {key}: unknown stage {s!r} (expected one of: {known})"
                    )
                if names.count(s) > 1:
                    raise ConfigError(f"{path}: [workers.{wname}] {key}: stage {s!r} listed twice")
                placed.add(s)
        both = [s for s in w.standby if s in w.stages]
        if both:
            raise ConfigError(
                f"{path}: [workers.{wname}] standby: {both[0]!r} is also in stages (a worker either prefers a stage "
                "or stands by for it)"
            )
        for d in w.devices():
            if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", d):
                raise ConfigError(f"{path}: [workers.{wname}] device: expected 'cpu', 'cuda:N' or 'mps', got {d!r}")

    stages: dict[str, StageSettings] = {}
    for sname in f.stages:
        if sname not in stage_options:
            raise ConfigError(f"{path}: [stages.{sname}] unknown stage (expected one of: {known})")
        if f.workers and sname not in placed:
            raise ConfigError(
                f"{path}: [stages.{sname}] no worker runs this stage (add it to a [workers.NAME] stages or standby)"
            )
    for sname, opts_type in stage_options.items():
        table = dict(f.stages.get(sname, {}))
        budget = table.pop("budget", None)
        budget_s = (
            parse_duration(budget, f"{path}: [stages.{sname}] budget")
            if budget is not None
            else default_budgets.get(sname, 1.0)
        )
        try:
            options = msgspec.convert(table, opts_type)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"{path}: {_describe(exc, f'stages.{sname}')}") from None
        stages[sname] = StageSettings(budget_s=budget_s, options=options)

    return Deployment(
        path=path,
        hub=f.hub,
        rooms=f.rooms,
        edges=f.edges,
        workers=f.workers,
        stages=stages,
        data_dir=Path(f.data_dir),
        wyoming=f.wyoming,
        mqtt=f.mqtt,
        console=f.console,
        mcp=f.mcp,
        esphome=f.esphome,
    )


def _check_esphome(f: DeployParsed, path: str) -> None:
    """Validate ``[esphome]`` against the rooms and edges."""
    e = f.esphome
    assert e is not None
    known = ", ".join(f.rooms) or "none"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,40}", e.name):
        raise ConfigError(f"{path}: [esphome] name = {e.name!r}: use letters, digits and '-' (a device name)")
    mic_rooms = [r for r in f.rooms if any(x.room == r and x.microphone is not None for x in f.edges.values())]
    seen: dict[int, str] = {}
    for room, port in e.ports(mic_rooms).items():
        if room not in f.rooms:
            raise ConfigError(f"{path}: [esphome.rooms] {room}: not a room of [rooms] (known: {known})")
        if room not in mic_rooms:
            raise ConfigError(f"{path}: [esphome.rooms] {room}: no edge node with a microphone in this room")
        if not 0 < port < 65536:
            raise ConfigError(f"{path}: [esphome.rooms] {room} = {port}: expected a TCP port 1-65535")
        if port in seen:
            raise ConfigError(f"{path}: [esphome.rooms] {room} = {port}: port already used by {seen[port]}")
        seen[port] = room


def _check_wyoming(f: DeployParsed, path: str) -> None:
    """Validate ``[wyoming]`` against the rooms and edges; fills in its default room."""
    w = f.wyoming
    assert w is not None
    known = ", ".join(f.rooms) or "none"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9-]{0,62}", w.name):
        raise ConfigError(f"{path}: [wyoming] name = {w.name!r}: use letters, digits and '-' (a zeroconf name)")
    if not w.room:
        if not f.rooms:
            raise ConfigError(f"{path}: [wyoming] needs a room for Home Assistant's audio, and [rooms] is empty")
        w.room = next(iter(f.rooms))
    elif w.room not in f.rooms:
        raise ConfigError(f"{path}: [wyoming] room = {w.room!r} is not a room of [rooms] (known: {known})")
    entries = [(f"{role}_port", port, False) for role, port in w.ports().items()]
    entries += [(f"satellites.{room}", port, True) for room, port in w.satellites.items()]
    seen: dict[int, tuple[str, bool]] = {}
    for key, port, satellite in entries:
        if not 0 < port < 65536:
            raise ConfigError(f"{path}: [wyoming] {key} = {port}: expected a TCP port 1-65535 (or 0 for off)")
        if satellite:
            room = key.split(".", 1)[1]
            if room not in f.rooms:
                raise ConfigError(f"{path}: [wyoming] {key}: not a room of [rooms] (known: {known})")
            if not any(e.room == room and e.microphone is not None for e in f.edges.values()):
                raise ConfigError(f"{path}: [wyoming] {key}: no edge node with a microphone in this room")
        other = seen.get(port)
        # Services may share a port (one Home Assistant entry then offers them all); a satellite needs its own.
        if other is not None and (satellite or other[1]):
            raise ConfigError(f"{path}: [wyoming] {key} = {port} is also the port of {other[0]}")
        seen[port] = (key, satellite)
    if not w.ports() and not w.satellites:
        raise ConfigError(f"{path}: [wyoming] every port is 0 and there are no satellites: nothing to serve")
    if not 10 <= w.block_ms <= 1000:
        raise ConfigError(f"{path}: [wyoming] block_ms = {w.block_ms}: expected 10-1000")
    if not 1 <= w.max_streams <= 64:
        raise ConfigError(f"{path}: [wyoming] max_streams = {w.max_streams}: expected 1-64")
