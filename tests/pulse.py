"""A PulseAudio null sink for the real PortAudio paths (microphone capture, loudspeaker playback).

PortAudio reaches PulseAudio through ALSA's "pulse" device, which comes from libasound2-plugins (only a
"recommends" of pulseaudio, so ``--no-install-recommends`` leaves it out); ``scripts/setup.sh`` installs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest


def pactl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["pactl", *args], capture_output=True, text=True, timeout=20)


def ensure_pulseaudio() -> None:
    """Start a per-user PulseAudio daemon if none runs; fail clearly when PortAudio cannot reach it."""
    if not all(shutil.which(p) for p in ("pulseaudio", "pactl", "paplay", "parec")):
        pytest.skip("pulseaudio is not installed (apt-get install pulseaudio pulseaudio-utils)")
    if pactl("info").returncode != 0:
        # root in a container: PulseAudio warns but runs as a per-user daemon
        res = subprocess.run(
            ["pulseaudio", "--daemonize", "--exit-idle-time=-1", "--system=false"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        for _ in range(50):
            if pactl("info").returncode == 0:
                break
            time.sleep(0.1)
        assert pactl("info").returncode == 0, f"PulseAudio did not start: {res.stderr.strip()}"
    import sounddevice as sd

    names = [d["name"] for d in sd.query_devices()]
    if "pulse" not in names:
        # PortAudio lists ALSA's "pulse" device only if PulseAudio ran when PortAudio initialized (an
        # earlier test in this process may have done that before the daemon started): look again.
        sd._terminate()
        sd._initialize()
        names = [d["name"] for d in sd.query_devices()]
    assert "pulse" in names, (
        f"PortAudio has no 'pulse' device (it has: {names}); ALSA's PulseAudio plugin is missing: "
        "apt-get install libasound2-plugins (scripts/setup.sh does)"
    )


@contextlib.contextmanager
def null_sink(prefix: str, rate: int) -> Iterator[str]:
    """A mono null sink at ``rate``, removed afterwards; yields its name (its monitor is NAME.monitor)."""
    ensure_pulseaudio()
    name = f"{prefix}_{uuid.uuid4().hex[:6]}"
    res = pactl("load-module", "module-null-sink", f"sink_name={name}", f"rate={rate}", "channels=1")
    assert res.returncode == 0, f"PulseAudio refused the null sink: {res.stderr.strip()}"
    try:
        yield name
    finally:
        pactl("unload-module", res.stdout.strip())


def streams_of_this_process(kind: str) -> list[int]:
    """Indexes of this process's ``source-outputs`` (recordings) or ``sink-inputs`` (playbacks)."""
    items = json.loads(pactl("-f", "json", "list", kind).stdout or "[]")
    me = str(os.getpid())
    return [int(i["index"]) for i in items if i.get("properties", {}).get("application.process.id") == me]


def unplug(module: str) -> None:
    """Remove a null sink as if its device were unplugged.

    PulseAudio moves the streams of a removed source to the fallback source (a sound server's idea of
    unplugging); a hardware device just vanishes, so the recordings that were moved are killed too.
    """
    pactl("unload-module", module)
    for index in streams_of_this_process("source-outputs"):
        pactl("kill-source-output", str(index))
