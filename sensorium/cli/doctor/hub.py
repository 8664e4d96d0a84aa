"""Checks of the hub side and of every node's way to it: ports, event log, CURVE keys, a round trip."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sensorium.cli.doctor.context import Checkup
from sensorium.cli.doctor.findings import Checks, Finding
from sensorium.cli.doctor.probes import (
    _bind_problem,
    _connectable,
    _host_port,
    _user,
)


def check_hub_ports(dr: Checkup) -> Checks:
    from sensorium.pipeline.bus import Endpoints

    address = dr.deployment.hub.address
    endpoints = Endpoints.from_address(address)
    answering = dr.probe_hub() is not None
    if address.startswith("tcp://"):
        for ep in endpoints.all():
            host, port = _host_port(ep)
            why = _bind_problem(host, port)
            if why is None:
                yield Finding("PASS", f"port {port}", f"{ep}: free for the hub")
            elif answering:
                yield Finding("PASS", f"port {port}", f"{ep}: bound by the running hub")
            elif "not an address" in why:
                yield Finding(
                    "FAIL",
                    f"port {port}",
                    f"{ep}: {why}",
                    f"run the hub on the machine that has {host} (see 'ip -br addr'), or fix [hub] address",
                )
            else:
                yield Finding(
                    "FAIL",
                    f"port {port}",
                    f"{ep}: {why}, and no hub answers there",
                    f"find the process: ss -ltnp 'sport = :{port}'; stop it or change [hub] address",
                )
    elif address.startswith("ipc://"):
        folder = Path(endpoints.control[len("ipc://") :]).parent
        if not folder.is_dir():
            yield Finding(
                "FAIL",
                "ipc folder",
                f"{folder} does not exist",
                f"create it (install -d -o sensorium {folder}) or use ipc:///run/sensorium/hub",
            )
        elif not os.access(folder, os.W_OK):
            yield Finding("FAIL", "ipc folder", f"{folder} is not writable by {_user()}", f"chown sensorium {folder}")
        else:
            yield Finding("PASS", "ipc folder", f"{folder}: writable" + ("; hub answering" if answering else ""))
    hub = dr.deployment.hub
    ports = [("hub metrics", hub.metrics_port, hub.metrics_host)]
    ports += [(f"{w} metrics", c.metrics_port, c.metrics_host) for w, c in dr.deployment.workers.items()]
    for label, port, host in ports:
        if port:
            why = _bind_problem(host, port)
            yield Finding(
                "PASS" if why is None else "WARN",
                f"port {port}",
                f"{label}: " + (why or "free"),
                "" if why is None else f"fine if sensorium runs already; else: ss -ltnp 'sport = :{port}'",
            )


def check_event_log(dr: Checkup) -> Checks:
    state = dr.state_dir or (dr.deployment.data_dir / "hub")
    path = state.expanduser() / "events.jsonl"
    if not path.exists():
        yield Finding("PASS", "event log", f"{path}: none yet (the hub creates it)")
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
        yield Finding("WARN", "event log", detail + " (readable by other users)", f"chmod 600 {path}")
    elif damaged or disorder:
        torn = " (a torn last line after a power cut)" if damaged == 1 and raw and not raw.endswith(b"\n") else ""
        yield Finding(
            "WARN",
            "event log",
            f"{detail}; {damaged} damaged, {disorder} out-of-order lines{torn}",
            "the hub skips exactly the damaged lines and cuts off a torn last one on start; "
            "nothing to do unless it repeats",
        )
    else:
        yield Finding("PASS", "event log", detail)


def check_hub_keys(dr: Checkup) -> Checks:
    from sensorium.pipeline.bus import is_loopback

    hub = dr.deployment.hub
    needed = not is_loopback(hub.address) and not hub.allow_insecure
    if not hub.keys:
        if needed:
            yield Finding(
                "FAIL",
                "hub keys",
                f"{hub.address} is not loopback and [hub] keys is not set",
                "sensorium keys init-hub /etc/sensorium/hub-keys, then set [hub] keys to that folder",
            )
        else:
            yield Finding(
                "PASS",
                "hub keys",
                "not needed: the bus stays on loopback" + (" (allow_insecure = true)" if hub.allow_insecure else ""),
            )
        return
    folder = Path(hub.keys).expanduser()
    secret = folder / "hub.key_secret"
    f = yield from _key_file(dr, secret, "hub keys", f"sensorium keys init-hub {folder}")
    if f is None:
        return
    enrolled = {p.stem for p in (folder / "authorized").glob("*.key")}
    missing = [n for n in [*dr.deployment.workers, *dr.deployment.edges] if n not in enrolled]
    if missing:
        yield Finding(
            "WARN",
            "hub keys",
            f"{folder}: not enrolled yet: {', '.join(missing)} (they will be refused)",
            f"on each node: sensorium keys new NODE DIR --hub-public hub.key; here: sensorium keys enrol "
            f"NODE.key --hub-dir {folder}",
        )
    else:
        yield Finding("PASS", "hub keys", f"{folder}: key pair 0600, {len(enrolled)} nodes enrolled")


def check_node_keys(dr: Checkup, name: str, keys: str) -> Checks:
    from sensorium.pipeline.bus import is_loopback

    hub = dr.deployment.hub
    needed = not is_loopback(hub.address) and not hub.allow_insecure
    if not keys:
        if needed:
            yield Finding(
                "FAIL",
                f"keys {name}",
                f"the hub at {hub.address} requires CURVE keys; {name} has none",
                f"sensorium keys new {name} /etc/sensorium/keys --hub-public hub.key; set keys = "
                f'"/etc/sensorium/keys" in its table; enrol {name}.key at the hub',
            )
        else:
            yield Finding("PASS", f"keys {name}", "not needed: the bus stays on loopback")
        return
    folder = Path(keys).expanduser()
    key = yield from _key_file(
        dr, folder / f"{name}.key_secret", f"keys {name}", f"sensorium keys new {name} {folder} --hub-public hub.key"
    )
    if key is None:
        return
    if not (folder / "hub.key").exists():
        yield Finding(
            "FAIL",
            f"keys {name}",
            f"{folder}/hub.key (the hub's public key) is missing",
            f"copy the hub's hub.key to {folder}/hub.key",
        )
        return
    yield Finding("PASS", f"keys {name}", f"{folder}: key pair 0600 and the hub's public key")


def _key_file(dr: Checkup, secret: Path, check: str, fix: str) -> Checks:
    if not secret.exists():
        yield Finding("FAIL", check, f"{secret} is missing", fix)
        return None
    mode = stat.S_IMODE(secret.stat().st_mode)
    if mode & 0o077:
        yield Finding(
            "FAIL", check, f"{secret}: mode {oct(mode)}, other users can read the secret key", f"chmod 600 {secret}"
        )
        return None
    if not os.access(secret, os.R_OK):
        yield Finding("FAIL", check, f"{secret}: not readable by {_user()}", f"chown sensorium {secret}")
        return None
    return secret


def check_hub_reachable(dr: Checkup) -> Checks:
    from sensorium.pipeline.bus import Endpoints

    endpoint = _connectable(Endpoints.from_address(dr.deployment.hub.address).control)
    res = dr.probe_hub()
    if res is None:
        yield Finding(
            "FAIL",
            "hub",
            f"no answer from {endpoint} within {dr.hub_timeout:g} s",
            "start it (systemctl start sensorium-hub, or sensorium hub --config …); check [hub] address, "
            "the firewall, and that this node's key is enrolled at the hub",
        )
        return
    rtt, reply = res
    seq = getattr(reply, "last_seq", None)
    yield Finding(
        "PASS",
        "hub",
        f"{endpoint} answered in {rtt * 1000:.1f} ms" + (f"; event log at seq {seq}" if seq is not None else ""),
    )
