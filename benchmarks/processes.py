"""Real processes for the soak and chaos runs: each in its own session (a kill reaches all of it), each
with its own log file that restarts append to, started the way systemd would start it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SENSORIUM = [sys.executable, "-m", "sensorium"]
"""The normal CLI, as a unit file runs it."""


def with_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group of ``pid`` (gone already is fine)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


@dataclass
class Processes:
    """Named processes of one deployment; ``argv`` says how each is (re)started."""

    folder: Path
    """Where the logs go (``<name>.log``)."""
    argv: dict[str, list[str]]
    """Command line per name."""
    stdout: dict[str, Path] = field(default_factory=dict)
    """Names whose standard output is data (appended to this file; stderr still goes to the log)."""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)
    """How often each was started."""

    def start(self, name: str) -> subprocess.Popen[bytes]:
        """Start ``name`` (again), its output appended to its log."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.stdout.get(name)
        with open(self.folder / f"{name}.log", "ab") as log, open(data or os.devnull, "ab") as out:
            log.write(f"\n===== start {time.strftime('%X')} =====\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}
            proc = subprocess.Popen(
                self.argv[name],
                stdout=out if data else log,
                stderr=log if data else subprocess.STDOUT,
                cwd=REPO,
                env=env,
                start_new_session=True,
            )
        self.procs[name] = proc
        self.starts[name] = self.starts.get(name, 0) + 1
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal ``name``'s whole process group and reap it."""
        proc = self.procs.pop(name)
        with_group(proc.pid, sig)
        proc.wait(15)

    def dead(self) -> dict[str, int]:
        """Processes that exited by themselves: name → exit status."""
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def stop(self, names: list[str] | None = None, timeout: float = 20.0) -> dict[str, int]:
        """SIGINT (Ctrl-C, what the CLI handles), then SIGKILL what is still there; returns exit statuses."""
        chosen = {n: p for n, p in self.procs.items() if names is None or n in names}
        for p in chosen.values():
            if p.poll() is None:
                with_group(p.pid, signal.SIGINT)
        deadline = time.monotonic() + timeout
        out = {}
        for n, p in chosen.items():
            try:
                out[n] = p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with_group(p.pid, signal.SIGKILL)
                out[n] = p.wait(10)
            self.procs.pop(n, None)
        return out

    def log_tail(self, name: str, chars: int = 3000) -> str:
        """The end of ``name``'s log."""
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def logs(self, chars: int = 3000) -> str:
        """The end of every log, for a failure message."""
        return "\n".join(f"--- {p.stem} ---\n{self.log_tail(p.stem, chars)}" for p in sorted(self.folder.glob("*.log")))
