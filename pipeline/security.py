"""CURVE keys: the hub's key pair, node key pairs, and the hub's list of enrolled node keys.

Layout (all made by ``sensorium keys``):

* hub folder: ``hub.key`` (public), ``hub.key_secret`` (mode 0600), ``authorized/NODE.key``
  (public keys of enrolled nodes; unknown keys are refused by the ZAP handler).
* node folder: ``NODE.key``, ``NODE.key_secret`` (0600) and ``hub.key`` (the hub's public key).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth


class KeyError_(ValueError):
    """Keys are missing or unreadable; the text says which file."""


@dataclass(frozen=True)
class CurveKeys:
    """A key pair, plus the server's public key for clients."""

    public: bytes
    """This side's public key (Z85)."""
    secret: bytes
    """This side's secret key (Z85)."""
    server_public: bytes | None = None
    """The hub's public key (clients only)."""

    def apply_client(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the hub."""
        if self.server_public is None:
            raise KeyError_("client keys need the hub's public key (hub.key)")
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_serverkey = self.server_public

    def apply_server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE server."""
        sock.curve_secretkey = self.secret
        sock.curve_publickey = self.public
        sock.curve_server = True


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.exists():
        raise KeyError_(f"key file not found: {path}")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise KeyError_(f"cannot read key file {path}: {exc}") from None


def init_hub(folder: str | Path) -> Path:
    """Create the hub's key pair and an empty ``authorized`` folder; returns the public key path."""
    folder = Path(folder)
    (folder / "authorized").mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    public, secret = zmq.auth.create_certificates(str(folder), "hub")
    os.chmod(secret, 0o600)
    return Path(public)


def new_node(folder: str | Path, name: str, hub_public: str | Path) -> Path:
    """Create a node's key pair next to a copy of the hub's public key; returns the node's public key."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    _load(Path(hub_public))
    if Path(hub_public).resolve() != (folder / "hub.key").resolve():
        shutil.copyfile(hub_public, folder / "hub.key")
    return Path(public)


def enrol(hub_folder: str | Path, node_public: str | Path) -> Path:
    """Authorize a node's public key at the hub."""
    node_public = Path(node_public)
    public, _ = _load(node_public)
    if not public:
        raise KeyError_(f"{node_public} holds no public key")
    dest = Path(hub_folder) / "authorized" / node_public.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(node_public, dest)
    return dest


def revoke(hub_folder: str | Path, node: str) -> bool:
    """Remove a node's key from the hub's authorized list."""
    path = Path(hub_folder) / "authorized" / f"{node}.key"
    if path.exists():
        path.unlink()
        return True
    return False


def hub_keys(folder: str | Path) -> CurveKeys:
    """Load the hub's key pair."""
    public, secret = _load(Path(folder) / "hub.key_secret")
    if not secret:
        raise KeyError_(f"{folder}/hub.key_secret holds no secret key")
    return CurveKeys(public=public, secret=secret)


def node_keys(folder: str | Path, name: str) -> CurveKeys:
    """Load a node's key pair and the hub's public key."""
    folder = Path(folder)
    public, secret = _load(folder / f"{name}.key_secret")
    server, _ = _load(folder / "hub.key")
    if not secret:
        raise KeyError_(f"{folder}/{name}.key_secret holds no secret key")
    return CurveKeys(public=public, secret=secret, server_public=server)
