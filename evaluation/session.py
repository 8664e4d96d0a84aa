"""The session builder: compose a labelled MCAP session from media files described in a TOML spec.

A spec places WAV clips on room microphones and images or videos on cameras, at given times, with
what they contain (wake word, words said, speaker, people on camera)::

    [session]
    name = "evening"
    duration = "40s"          # default: the end of the last clip + 1 s

    [rooms.kitchen]
    nodes = ["kitchen-pi"]     # microphones: each streams continuously for the whole session
    cameras = ["kitchen-cam"]
    idle_fps = 0.5             # empty-room frames while no video clip covers a camera (0 = none)

    [[audio]]
    room = "kitchen"           # node = "kitchen-pi" (default: the room's first node)
    file = "clips/joe-1.wav"   # relative to the spec's folder
    at = "2s"
    wake = "hey_jarvis"        # "" for speech without the wake word (false-alarm check)
    text = "turn on the kitchen lights"   # the words after the wake word
    speaker = "joe"

    [[video]]
    room = "kitchen"           # camera = "kitchen-cam" (default: the room's first camera)
    file = "zidane.jpg"        # an image (held for `duration`) or a video file
    at = "0s"
    duration = "20s"
    fps = 1.0
    persons = 2                # people in view (default: len(people))
    people = []                # enrolled people in view, by name

The output is a normal recording (``pipeline.recorder``): continuous ``AudioChunk`` streams per
node and ``VideoFrame`` streams per camera, stamped from ``session.start``, plus one record per
clip on the ``labels`` channel and the room layout in the ``sensorium.session`` metadata. Every
problem in a spec raises ``SessionError`` naming the spec file, the entry and what is wrong.

``build_sample`` makes the bundled sample session that ``sensorium demo`` plays, from speech
synthesized here (Piper joe, flite slt and rms) and images shipped in installed packages.
"""

from __future__ import annotations

import json
import logging
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from sensorium.evaluation import media
from sensorium.pipeline.config import ConfigError, parse_duration
from sensorium.pipeline.messages import AudioChunk, Message, VideoFrame
from sensorium.pipeline.recorder import LABELS_TOPIC, Recorder

log = logging.getLogger("sensorium.session")

DEFAULT_START = 1_000_000_000.0
"""Hub time of a built session's t = 0 (fixed, so a build is reproducible byte for byte)."""


class SessionError(ValueError):
    """The spec or one of its media files is wrong; the text says where and what."""


# ----------------------------------------------------------------------------------------- labels


class Label(msgspec.Struct, tag_field="kind", kw_only=True):
    """What a clip of a session contains (ground truth for the report)."""

    room: str
    """Room of the clip."""
    t0: float
    """Start, hub clock of the session."""
    t1: float
    """End, hub clock of the session."""
    file: str = ""
    """Media file it came from."""


class SpeechLabel(Label, tag="speech"):
    """A spoken clip on a room microphone."""

    node: str = ""
    """Edge node whose microphone carries it."""
    wake: str = ""
    """Wake word said at the start ("" if none: a detection here is a false alarm)."""
    text: str = ""
    """Words said after the wake word."""
    speaker: str = ""
    """Who speaks (an enrolled name, or "" if not labelled)."""


class PeopleLabel(Label, tag="people"):
    """People in view of a camera."""

    camera: str = ""
    """Camera that sees them."""
    persons: int = 0
    """Number of people in view."""
    people: list[str] = msgspec.field(default_factory=list)
    """Enrolled people in view, by name."""


AnyLabel = SpeechLabel | PeopleLabel
_LABEL_JSON = msgspec.json.schema(AnyLabel)
LABEL_SCHEMA = json.dumps(
    {"title": "sensorium.Label", "type": "object", "anyOf": _LABEL_JSON["anyOf"], "$defs": _LABEL_JSON["$defs"]}
).encode()
_label_decoder = msgspec.json.Decoder(AnyLabel)


def decode_label(obj: dict[str, Any]) -> AnyLabel:
    """A label record read back from a session."""
    return msgspec.convert(obj, AnyLabel)


# ------------------------------------------------------------------------------------------- spec


class _Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class SessionSpec(_Strict):
    """The ``[session]`` table."""

    name: str = "session"
    """Session name (stored in the metadata)."""
    start: float = DEFAULT_START
    """Hub time of t = 0."""
    duration: str | float | None = None
    """Length; default: end of the last clip + 1 s."""
    block_ms: int = 80
    """Audio chunk length, as an edge node's microphone."""
    noise_dbfs: float = -70.0
    """Microphone noise floor added everywhere (≤ -120 for digital silence)."""
    width: int = 640
    """Camera frame width (frames are scaled down to it)."""
    jpeg_quality: int = 80
    """JPEG quality of camera frames."""
    foxglove_images: bool = False
    """Also store frames as ``foxglove.CompressedImage`` so Foxglove's Image panel shows the cameras."""


class RoomSpec(_Strict):
    """A ``[rooms.<name>]`` table."""

    nodes: list[str] = []
    """Microphone nodes in the room."""
    cameras: list[str] = []
    """Cameras in the room."""
    idle_fps: float = 0.0
    """Empty-room frames per second while no video clip covers a camera (0 = none)."""


class AudioSpec(_Strict):
    """An ``[[audio]]`` entry."""

    room: str
    file: str
    at: str | float = 0.0
    node: str = ""
    wake: str = ""
    text: str = ""
    speaker: str = ""
    gain_db: float = 0.0


class VideoSpec(_Strict):
    """A ``[[video]]`` entry."""

    room: str
    file: str
    at: str | float = 0.0
    duration: str | float | None = None
    camera: str = ""
    fps: float = 2.0
    persons: int | None = None
    people: list[str] = []


class Spec(_Strict):
    """A whole session spec."""

    session: SessionSpec = msgspec.field(default_factory=SessionSpec)
    rooms: dict[str, RoomSpec] = {}
    audio: list[AudioSpec] = []
    video: list[VideoSpec] = []


def _where(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    m = re.search(r"- at `\$\.?(.*)`$", text)
    if not m:
        return text
    path = re.sub(r"^(audio|video)\[(\d+)\]", lambda g: f"[[{g[1]}]] #{int(g[2]) + 1}", m.group(1))
    return f"{path}: {text[: m.start()].strip()}"


def load_spec(path: str | Path) -> Spec:
    """Parse and type-check a spec file (media and rooms are checked by ``build``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SessionError(f"{path}: spec file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise SessionError(f"{path}: not valid TOML: {exc}") from None
    return parse_spec(raw, str(path))


def parse_spec(raw: dict[str, Any], where: str = "<spec>") -> Spec:
    """Type-check an already parsed spec."""
    try:
        return msgspec.convert(raw, Spec)
    except msgspec.ValidationError as exc:
        raise SessionError(f"{where}: {_where(exc)}") from None


# ------------------------------------------------------------------------------------------ build


@dataclass
class BuildResult:
    """What ``build`` wrote."""

    path: Path
    """The session file."""
    duration: float
    """Session length, seconds."""
    audio_chunks: int = 0
    """AudioChunk messages written."""
    video_frames: int = 0
    """VideoFrame messages written."""
    labels: list[AnyLabel] = field(default_factory=list)
    """Ground truth stored in the file."""


def _secs(value: str | float | None, where: str) -> float:
    try:
        return parse_duration(value if value is not None else 0.0, where)
    except ConfigError as exc:
        raise SessionError(str(exc)) from None


def _resolve(base: Path, file: str, where: str) -> Path:
    if file.startswith("package:"):
        try:
            return media.package_image(file.split(":", 1)[1])
        except media.MediaError as exc:
            raise SessionError(f"{where}: {exc}") from None
    p = Path(file).expanduser()
    p = p if p.is_absolute() else base / p
    if not p.exists():
        raise SessionError(f"{where}: media file {file!r} not found (looked for {p})")
    return p


def build(
    spec: Spec | str | Path,
    out: str | Path,
    base_dir: str | Path | None = None,
    where: str = "",
    progress: Callable[[str], None] | None = None,
) -> BuildResult:
    """Compose the session described by ``spec`` into the MCAP file ``out``.

    Relative media paths resolve against ``base_dir`` (default: the spec file's folder).
    """
    if not isinstance(spec, Spec):
        where = where or str(spec)
        base_dir = base_dir or Path(spec).resolve().parent
        spec = load_spec(spec)
    where = where or "<spec>"
    base = Path(base_dir or ".")
    say = progress or (lambda _s: None)
    s = spec.session
    if not spec.rooms:
        raise SessionError(f"{where}: [rooms] is empty; add at least one [rooms.<name>] with nodes or cameras")
    rate = media.RATE
    block = max(int(rate * s.block_ms / 1000), 1)

    # ---- check every entry and load its media before writing anything
    clips: list[tuple[AudioSpec, str, np.ndarray, float]] = []
    for i, a in enumerate(spec.audio, 1):
        loc = f"{where}: [[audio]] #{i}"
        room = spec.rooms.get(a.room)
        if room is None:
            raise SessionError(f"{loc}: unknown room {a.room!r} (known: {', '.join(spec.rooms)})")
        node = a.node or (room.nodes[0] if room.nodes else "")
        if not node:
            raise SessionError(f"{loc}: room {a.room!r} has no microphone nodes (set [rooms.{a.room}] nodes)")
        if node not in room.nodes:
            raise SessionError(f"{loc}: node {node!r} is not in room {a.room!r} (nodes: {', '.join(room.nodes)})")
        path = _resolve(base, a.file, loc)
        try:
            pcm = media.read_wav(path, rate)
        except media.MediaError as exc:
            raise SessionError(f"{loc}: {exc}") from None
        if a.gain_db:
            pcm = np.clip(pcm.astype(np.float32) * 10 ** (a.gain_db / 20), -32768, 32767).astype(np.int16)
        clips.append((a, node, pcm, _secs(a.at, f"{loc} at")))

    shots: list[tuple[VideoSpec, str, list[tuple[float, bytes, int, int]], float, float]] = []
    for i, v in enumerate(spec.video, 1):
        loc = f"{where}: [[video]] #{i}"
        room = spec.rooms.get(v.room)
        if room is None:
            raise SessionError(f"{loc}: unknown room {v.room!r} (known: {', '.join(spec.rooms)})")
        camera = v.camera or (room.cameras[0] if room.cameras else "")
        if not camera:
            raise SessionError(f"{loc}: room {v.room!r} has no cameras (set [rooms.{v.room}] cameras)")
        if camera not in room.cameras:
            raise SessionError(
                f"{loc}: camera {camera!r} is not in room {v.room!r} (cameras: {', '.join(room.cameras)})"
            )
        if v.fps <= 0:
            raise SessionError(f"{loc}: fps must be > 0, got {v.fps}")
        path = _resolve(base, v.file, loc)
        at = _secs(v.at, f"{loc} at")
        dur = _secs(v.duration, f"{loc} duration") if v.duration is not None else 0.0
        try:
            if media.is_image(path):
                if dur <= 0:
                    raise SessionError(f"{loc}: an image needs a duration (how long it stays in view)")
                jpeg, w, h = media.image_jpeg(path, s.width, s.jpeg_quality)
                n = max(int(round(dur * v.fps)), 1)
                frames = [(k / v.fps, jpeg, w, h) for k in range(n)]
            else:
                frames = media.video_jpegs(path, v.fps, dur or 3600.0, s.width, s.jpeg_quality)
                dur = dur or frames[-1][0] + 1.0 / v.fps
        except media.MediaError as exc:
            raise SessionError(f"{loc}: {exc}") from None
        shots.append((v, camera, frames, at, dur))

    ends = [at + len(pcm) / rate for _, _, pcm, at in clips] + [at + dur for *_, at, dur in shots]
    duration = (
        _secs(s.duration, f"{where}: [session] duration") if s.duration is not None else max(ends, default=0.0) + 1.0
    )
    if duration <= 0:
        raise SessionError(f"{where}: the session is empty (no clips and no [session] duration)")
    for (a, _, pcm, at), i in zip(clips, range(1, len(clips) + 1), strict=True):
        if at + len(pcm) / rate > duration + 1e-6:
            raise SessionError(f"{where}: [[audio]] #{i} ({a.file}) ends after the session's duration {duration:g}s")

    # ---- compose the streams
    t_start = s.start
    msgs: list[Message] = []
    labels: list[AnyLabel] = []
    n_samples = int(round(duration * rate))
    rng = np.random.default_rng(0)
    for room_name, room in spec.rooms.items():
        for node in room.nodes:
            track = np.zeros(n_samples, dtype=np.float32)
            if s.noise_dbfs > -120:
                track += rng.standard_normal(n_samples).astype(np.float32) * (10 ** (s.noise_dbfs / 20) * 32767)
            for a, n, pcm, at in clips:
                if a.room == room_name and n == node:
                    i0 = int(round(at * rate))
                    track[i0 : i0 + len(pcm)] += pcm[: n_samples - i0]
            pcm16 = np.clip(np.round(track), -32768, 32767).astype("<i2")
            for k, i0 in enumerate(range(0, n_samples, block)):
                msgs.append(
                    AudioChunk(
                        seq=k + 1,
                        time=t_start + i0 / rate,
                        room=room_name,
                        source=node,
                        rate=rate,
                        data=pcm16[i0 : i0 + block].tobytes(),
                    )
                )
        say(f"  {room_name}: {len(room.nodes)} microphone(s), {len(room.cameras)} camera(s)")
        for camera in room.cameras:
            covered: list[tuple[float, float]] = []
            frames_at: list[tuple[float, bytes, int, int]] = []
            for v, cam, frames, at, dur in shots:
                if v.room == room_name and cam == camera:
                    covered.append((at, at + dur))
                    frames_at += [(at + off, jpeg, w, h) for off, jpeg, w, h in frames if off < dur]
            if room.idle_fps > 0:
                idle = media.gray_jpeg(s.width, s.width * 3 // 4, s.jpeg_quality)
                t = 0.0
                while t < duration:
                    if not any(a <= t < b for a, b in covered):
                        frames_at.append((t, *idle))
                    t += 1.0 / room.idle_fps
            frames_at.sort(key=lambda f: f[0])
            for k, (t, jpeg, w, h) in enumerate(frames_at):
                msgs.append(
                    VideoFrame(seq=k + 1, time=t_start + t, room=room_name, source=camera, width=w, height=h, data=jpeg)
                )

    for a, node, pcm, at in clips:
        labels.append(
            SpeechLabel(
                room=a.room,
                node=node,
                t0=t_start + at,
                t1=t_start + at + len(pcm) / rate,
                file=a.file,
                wake=a.wake,
                text=a.text,
                speaker=a.speaker,
            )
        )
    for v, camera, _frames, at, dur in shots:
        labels.append(
            PeopleLabel(
                room=v.room,
                camera=camera,
                t0=t_start + at,
                t1=t_start + at + dur,
                file=v.file,
                persons=v.persons if v.persons is not None else len(v.people),
                people=list(v.people),
            )
        )

    # ---- write: labels first, so even a truncated copy of the file keeps its ground truth
    msgs.sort(key=lambda m: (m.time, m.topic()))
    labels.sort(key=lambda lb: lb.t0)
    rooms_meta = {r: {"nodes": rs.nodes, "cameras": rs.cameras} for r, rs in spec.rooms.items()}
    meta = {
        "name": s.name,
        "start": repr(t_start),
        "duration": repr(duration),
        "rooms": json.dumps(rooms_meta),
    }
    out = Path(out)
    tmp = out.with_name(out.name + ".part")
    result = BuildResult(path=out, duration=duration, labels=labels)
    # small chunks: a truncated copy of the file still replays up to a couple of seconds before the cut
    with Recorder(
        tmp, metadata=meta, flush_seconds=1e9, chunk_size=64 * 1024, foxglove_images=s.foxglove_images
    ) as rec:
        for lb in labels:
            rec.write_json(LABELS_TOPIC, "sensorium.Label", LABEL_SCHEMA, lb, lb.t0)
        for m in msgs:
            rec.write_message(m, m.time)
            if isinstance(m, AudioChunk):
                result.audio_chunks += 1
            else:
                result.video_frames += 1
    tmp.replace(out)
    return result


# ----------------------------------------------------------------------------------------- sample

SAMPLE_VOICES = {"joe": "piper:joe", "sara": "flite:slt", "rob": "flite:rms"}
"""Enrolled people of the sample session and the voice each speaks with."""

SAMPLE_UTTERANCES: list[tuple[str, str, str, str]] = [
    # (room, person, wake word, command)
    ("kitchen", "joe", "hey_jarvis", "turn on the kitchen lights"),
    ("living_room", "sara", "hey_jarvis", "what is the weather tomorrow"),
    ("kitchen", "rob", "hey_jarvis", "set a timer for ten minutes"),
    ("living_room", "joe", "hey_jarvis", "play some jazz music"),
    ("kitchen", "sara", "hey_jarvis", "add milk to the shopping list"),
    ("living_room", "rob", "hey_jarvis", "turn off the television"),
    ("kitchen", "joe", "", "the soup needs more salt"),
]
"""The sample's speech: six commands after "hey jarvis" and one sentence without it."""

SAMPLE_ENROLL_TEXT = [
    "My voice is my password, please remember it.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "I would like a cup of coffee and two slices of toast this morning.",
]
"""Sentences each sample person says for voice enrolment (different from the commands)."""

SAMPLE_FACES = {"tom_hanks": "tom_hanks"}
"""Enrolled faces of the sample: person → package image it is enrolled from."""


#: Silence between the sample's commands: room for the answer to be spoken before the next
#: "hey jarvis" (a wake word during an answer is a barge-in, held to a higher threshold).
SAMPLE_GAP_S = 4.5


def sample_enrollment(cache: str | Path) -> dict[str, dict[str, list[Path]]]:
    """Enrolment media for the sample's people: ``{person: {"voice": [wav…], "face": [image…]}}``."""
    cache = Path(cache)
    out: dict[str, dict[str, list[Path]]] = {}
    for person, voice in SAMPLE_VOICES.items():
        wavs = []
        for k, text in enumerate(SAMPLE_ENROLL_TEXT):
            wav = cache / f"enroll-{person}-{k}.wav"
            if not wav.exists():
                media.write_wav(wav, media.speech(text, voice, cache))
            wavs.append(wav)
        out[person] = {"voice": wavs, "face": []}
    for person, image in SAMPLE_FACES.items():
        out.setdefault(person, {"voice": [], "face": []})["face"].append(media.package_image(image))
    return out


def sample_spec(cache: str | Path) -> dict[str, Any]:
    """The sample session's spec (as a dict), synthesizing its speech into ``cache`` first."""
    cache = Path(cache).resolve()
    cache.mkdir(parents=True, exist_ok=True)
    audio: list[dict[str, Any]] = []
    t = 1.0
    for k, (room, person, wake, command) in enumerate(SAMPLE_UTTERANCES):
        said = f"hey jarvis, {command}" if wake else command
        pcm = media.speech(said, SAMPLE_VOICES[person], cache)
        wav = media.write_wav(cache / f"sample-{k}-{person}.wav", pcm)
        audio.append({"room": room, "file": str(wav), "at": t, "wake": wake, "text": command, "speaker": person})
        t = round(t + len(pcm) / media.RATE + SAMPLE_GAP_S, 2)
    end = t + 2.0
    half = round(end / 2, 1)
    video = [
        {"room": "kitchen", "file": "package:zidane", "at": 0.0, "duration": half, "fps": 1.0, "persons": 2},
        {
            "room": "living_room",
            "file": "package:tom_hanks",
            "at": 2.0,
            "duration": half,
            "fps": 1.0,
            "persons": 1,
            "people": ["tom_hanks"],
        },
        {"room": "living_room", "file": "package:bus", "at": half + 4.0, "duration": 6.0, "fps": 1.0, "persons": 4},
    ]
    return {
        "session": {"name": "sample", "duration": end},
        "rooms": {
            "kitchen": {"nodes": ["kitchen-pi"], "cameras": ["kitchen-cam"], "idle_fps": 0.5},
            "living_room": {"nodes": ["living-pi"], "cameras": ["living-cam"], "idle_fps": 0.5},
        },
        "audio": audio,
        "video": video,
    }


def build_sample(out: str | Path, cache: str | Path = ".cache/sample") -> BuildResult:
    """Build the sample session ``sensorium demo`` plays (speech synthesis is cached in ``cache``)."""
    raw = sample_spec(cache)
    return build(parse_spec(raw, "sample"), out, base_dir=cache, where="sample")
