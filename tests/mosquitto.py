"""A real MQTT broker for tests: Debian's mosquitto on a free loopback port with a generated config.

``Mosquitto(folder, users={"bridge": "secret"}, acl=...)`` writes ``mosquitto.conf`` (and a password
file made with ``mosquitto_passwd``), ``start()`` runs it and waits until it accepts connections;
``kill()`` / ``restart()`` take it down the hard way (no persistence by default: retained messages
are gone after a restart, the harsher case for a client). ``log_tail()`` for a failing test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from sensorium.evaluation.ports import free_port

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


class Mosquitto:
    """One mosquitto process."""

    def __init__(
        self,
        folder: str | Path,
        *,
        port: int | None = None,
        users: dict[str, str] | None = None,
        acl: str = "",
        persistence: bool = False,
        tls: tuple[Path, Path, Path] | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.port = port or free_port()
        self.users = users or {}
        self.acl = acl
        self.persistence = persistence
        self.tls = tls
        """(CA certificate, server certificate, server key): the listener speaks TLS only."""
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log_file(self) -> Path:
        return self.folder / "mosquitto.log"

    def _write_config(self) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.users else 'true'}",
            "user root",  # started as root, mosquitto would switch to its own user, which cannot read a test's files
            f"log_dest file {self.log_file}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.folder}/",
        ]
        if self.tls:
            ca, cert, key = self.tls
            lines += [f"cafile {ca}", f"certfile {cert}", f"keyfile {key}"]
        if self.users:
            pw = self.folder / "passwords"
            pw.unlink(missing_ok=True)
            for user, password in self.users.items():
                flags = ["-b"] if pw.exists() else ["-c", "-b"]
                subprocess.run([MOSQUITTO_PASSWD, *flags, str(pw), user, password], check=True, capture_output=True)
            os.chmod(pw, 0o600)
            lines.append(f"password_file {pw}")
        if self.acl:
            acl = self.folder / "acl"
            acl.write_text(self.acl)
            os.chmod(acl, 0o600)
            lines.append(f"acl_file {acl}")
        conf = self.folder / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> Mosquitto:
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}\n{self.log_tail()}")
            with socket.socket() as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not listen on {self.port}\n{self.log_tail()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: a clean shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes mid-conversation."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> None:
        """Kill, then start again on the same port."""
        self.kill()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_file.exists():
            return "(no mosquitto log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def retained(port: int, topic_filter: str = "#", wait: float = 0.6) -> dict[str, bytes]:
    """What the broker holds retained now, as a client that subscribes afresh (a restarted HA) gets it."""
    import aiomqtt

    out: dict[str, bytes] = {}
    async with aiomqtt.Client("127.0.0.1", port, identifier=f"retained-{time.monotonic_ns()}") as c:
        await c.subscribe(topic_filter, qos=1)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                async for m in c.messages:
                    if m.retain:
                        out[str(m.topic)] = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
    return out


def make_tls(folder: Path, host: str = "127.0.0.1") -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``host`` signed by it, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "server.pem", folder / "server.key", folder / "server.csr"
    ext = folder / "san.ext"
    ext.write_text(f"subjectAltName = IP:{host}\n")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sensorium test CA",
            "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr))
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return ca, cert, key
