"""Who may connect to the hub and under which name: CURVE keys enrolled in ``authorized/`` (the ZAP handler)."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("sensorium.hub")


class SecurityError(RuntimeError):
    """The hub refuses to start insecurely."""


class KeyDirectory:
    """ZAP credentials: the enrolled keys in ``authorized/``, re-read on each handshake.

    An enrolled key is known by its file's name (``authorized/kitchen-pi.key`` is "kitchen-pi"), the hub's
    own key as "hub": that name is the ZAP User-Id of every message that arrives over its connection."""

    def __init__(self, folder: Path, own: bytes) -> None:
        self.folder = folder
        self.own = own
        self.names: dict[bytes, str] = {own: "hub"}
        self._lock = threading.Lock()

    def read(self) -> dict[bytes, str]:
        """Public key (Z85) → key name, as the folder holds them now."""
        found = {self.own: "hub"}
        for f in self.folder.glob("*.key"):
            with contextlib.suppress(ValueError, OSError):
                pub, _ = zmq.auth.load_certificate(str(f))
                found.setdefault(pub, f.stem)
        with self._lock:
            self.names = found
        return found

    def enrolled(self, name: str) -> bool:
        """True if an enrolled key has this name."""
        return (self.folder / f"{name}.key").exists()

    def name_of(self, key: bytes) -> str:
        z = zmq.utils.z85.encode(key) if len(key) == 32 else key
        with self._lock:
            return self.names.get(z, "")

    def callback(self, domain: str, key: bytes) -> bool:
        ok = (zmq.utils.z85.encode(key) if len(key) == 32 else key) in self.read()
        if not ok:
            log.warning("refused unknown CURVE key %s", zmq.utils.z85.encode(key)[:12] if len(key) == 32 else key[:12])
        return ok


class Authenticator(ThreadAuthenticator):
    """The ZAP handler: the User-Id of a connection is its key's name (``KeyDirectory``)."""

    directory: KeyDirectory | None = None

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.directory.name_of(client_public_key) if self.directory is not None else ""


def may_speak_as(key: str, node: str, role: str, enrolled: bool) -> bool:
    """With CURVE: may the connection of key ``key`` register as ``node``? A key speaks as its own node;
    a client may also take ``<key>-<anything>`` (one key, several client processes: ``events-cli-4711``)
    unless that name is itself an enrolled key's."""
    if node == key:
        return True
    return role == "client" and node.startswith(f"{key}-") and not enrolled
