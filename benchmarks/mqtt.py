"""MQTT bridge → Home Assistant: latency, correctness through broker restarts, and the bridge's CPU.

Everything real: mosquitto, Home Assistant core (``.venv-homeassistant``, its MQTT integration added
through the config-flow API), the embedded pipeline with every stage on the CPU, and the bundled
sample session replayed at speed 1 (people entering and leaving two rooms, three voices).

* **latency**: for every state change the hub's events imply (presence → occupancy, people count,
  each person's room and tracker; speaker → last speaker), the time from the capture of the frame
  or audio behind it (the event's ``time``) to the change in Home Assistant (``last_changed`` of the
  state, which ``/api/states`` serves from then on). p50/p95 over the session.
* **restarts**: the same session with mosquitto killed and restarted five times: state changes Home
  Assistant missed or got that the events do not imply (sequence alignment per entity), and the
  states that were still wrong once HA had reconnected (goal 0).
* **cpu**: ``sensorium mqtt`` as its own process against a real hub and broker, fed a home's mix of
  events as fast as it takes them: CPU seconds per 1000 events (``/proc`` via psutil) and events/s.

``run_session`` is also what ``tests/test_mqtt_homeassistant.py`` drives. Run with
``python -m benchmarks --only mqtt``; results in ``benchmarks/results/mqtt.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):  # the Home Assistant and mosquitto harnesses live with the tests
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.outfile import add_out, write_results  # noqa: E402  (after the path set-up above)

SITE = "home"
WELCOME = "welcome to the kitchen"
#: Home Assistant configuration for the runs: an automation that greets whoever enters the kitchen,
#: through the bridge's say command (from "off" only: "unavailable" → "on" after a reconnect is no entry).
HA_CONFIG = f"""\
automation:
  - alias: Greet in the kitchen
    triggers:
      - trigger: state
        entity_id: binary_sensor.kitchen_occupancy
        from: "off"
        to: "on"
    actions:
      - action: mqtt.publish
        data:
          topic: sensorium/{SITE}/say/kitchen
          payload: "{WELCOME}"
"""
TRACKED_DOMAINS = ("binary_sensor.", "sensor.", "device_tracker.")
GONE = ("unavailable", "unknown")


@dataclass
class Change:
    """One state of one entity, as Home Assistant recorded it."""

    entity: str
    value: str
    t: float
    """``last_changed``, Unix time."""


@dataclass
class SessionRun:
    """What one replayed session produced on both sides."""

    rooms: list[str]
    people: list[str]
    events: list[Any] = field(default_factory=list)
    """Hub events (presence, speaker, transcript, playback) in hub order."""
    arrived: dict[int, float] = field(default_factory=dict)
    """Hub time each event reached a client, by sequence number."""
    labels: list[Any] = field(default_factory=list)
    """The session's ground truth (who speaks where, who is on which camera), session time."""
    offset: float = 0.0
    """Hub time of this run = session time + ``offset``."""
    changes: list[Change] = field(default_factory=list)
    """Home Assistant's states of the bridge's entities: the first read, then every state_changed."""
    tts: list[tuple[str, str, float]] = field(default_factory=list)
    """(room, text, hub time) of every synthesized answer chunk."""
    restarts: list[dict[str, float]] = field(default_factory=list)
    """Broker restarts: when it went down and came back, hub time."""
    final_ha: dict[str, str] = field(default_factory=dict)
    """Home Assistant's states at the end."""
    final_retained: dict[str, str] = field(default_factory=dict)
    """The states the broker held retained at the end (what a restarted HA would get), by entity."""
    bridge: dict[str, int] = field(default_factory=dict)
    """The bridge's counters."""
    session_s: float = 0.0


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def entities(rooms: Sequence[str], people: Sequence[str]) -> list[str]:
    """The entity ids the bridge's discovery gives Home Assistant (object ids set by the bridge)."""
    from sensorium.bridges.mqtt.topics import slug

    out = []
    for r in rooms:
        s = slug(r)
        out += [f"binary_sensor.{s}_occupancy", f"sensor.{s}_people", f"sensor.{s}_last_speaker"]
    for p in people:
        s = slug(p)
        out += [f"device_tracker.{s}", f"sensor.{s}_room"]
    return out


def expected(
    events: Sequence[Any], rooms: Sequence[str], people: Sequence[str]
) -> tuple[dict[str, list[tuple[float, str]]], dict[tuple[str, float], int]]:
    """Per entity, the states the hub's events imply, with the capture time of the event behind each
    (and, by (entity, time), the sequence number of that event).

    Independent of the bridge's own bookkeeping: occupancy and counts come from the presence
    stage's ``people`` field, rooms from entered/present/left, the last speaker from speaker events.
    """
    from sensorium.bridges.mqtt.topics import slug
    from sensorium.pipeline.messages import Presence, SpeakerIdentified, Transcript

    tl: dict[str, list[tuple[float, str]]] = defaultdict(list)
    seqs: dict[tuple[str, float], int] = {}

    def put(entity: str, t: float, value: str, seq: int = 0) -> None:
        if not tl[entity] or tl[entity][-1][1] != value:
            tl[entity].append((t, value))
            seqs[(entity, t)] = seq

    for r in rooms:
        put(f"binary_sensor.{slug(r)}_occupancy", 0.0, "off")
        put(f"sensor.{slug(r)}_people", 0.0, "0")
    for p in people:
        put(f"device_tracker.{slug(p)}", 0.0, "not_home")
        put(f"sensor.{slug(p)}_room", 0.0, "not_home")
    where: dict[str, str] = {}
    for ev in events:
        if isinstance(ev, Presence):
            if ev.room in rooms:
                put(f"binary_sensor.{slug(ev.room)}_occupancy", ev.time, "on" if ev.people > 0 else "off", ev.seq)
                put(f"sensor.{slug(ev.room)}_people", ev.time, str(ev.people), ev.seq)
            if ev.person in people:
                if ev.state == "left":
                    if where.get(ev.person) == ev.room:
                        where.pop(ev.person)
                else:
                    where[ev.person] = ev.room
                room = where.get(ev.person, "")
                put(f"device_tracker.{slug(ev.person)}", ev.time, "home" if room else "not_home", ev.seq)
                put(f"sensor.{slug(ev.person)}_room", ev.time, room or "not_home", ev.seq)
        elif isinstance(ev, SpeakerIdentified) and ev.room in rooms:
            put(f"sensor.{slug(ev.room)}_last_speaker", ev.time, ev.person, ev.seq)
        elif isinstance(ev, Transcript) and ev.final and ev.speaker and ev.room in rooms:
            put(f"sensor.{slug(ev.room)}_last_speaker", ev.t0 or ev.time, ev.speaker, ev.seq)
    return dict(tl), seqs


def retained_states(held: dict[str, bytes]) -> dict[str, str]:
    """The bridge's retained state topics as the Home Assistant states they stand for, by entity id."""
    out = {}
    prefix = f"sensorium/{SITE}/"
    for topic, payload in held.items():
        parts = topic.removeprefix(prefix).split("/")
        value = payload.decode()
        if parts[0] == "room" and len(parts) == 3 and parts[2] in ("occupancy", "people", "last_speaker"):
            domain = "binary_sensor" if parts[2] == "occupancy" else "sensor"
            out[f"{domain}.{parts[1]}_{parts[2]}"] = value.lower() if parts[2] == "occupancy" else value
        elif parts[0] == "person" and len(parts) == 3 and parts[2] == "room":
            out[f"sensor.{parts[1]}_room"] = value
        elif parts[0] == "person" and len(parts) == 3 and parts[2] == "home":
            out[f"device_tracker.{parts[1]}"] = value
    return out


def _segments(changes: Sequence[Change], entity: str, end: float) -> list[tuple[float, float, str]]:
    """What Home Assistant showed for ``entity``: (from, to, value), "unavailable" included."""
    shown: list[tuple[float, str]] = []
    for t, v in sorted((c.t, c.value) for c in changes if c.entity == entity):
        if not shown or shown[-1][1] != v:  # an attribute change repeats the state
            shown.append((t, v))
    return [(t, shown[k + 1][0] if k + 1 < len(shown) else end, v) for k, (t, v) in enumerate(shown)]


def compare(run: SessionRun, slack: float = 1.0, early: float = 0.5) -> dict[str, Any]:
    """Each implied state against what Home Assistant showed while it was current.

    An implied state lives from the moment its event reached the hub's clients until the next one's
    (capture time for the stamps). It was *shown* if HA displayed its value at some moment of that
    life (plus ``slack`` for delivery); otherwise *missed*, and missed *while HA was connected* unless
    HA's MQTT client was away ("unavailable", and ``slack`` after it came back for the retained
    messages) for all but ``slack`` of that life. A value HA displayed that no implied state had then
    (an old state replayed, a state twice after it had changed, a wrong one) is *extra*; the moments
    HA shows its pre-outage value right after reconnecting, before the retained messages land
    (< ``slack``), are not; nor is a value shown up to ``early`` before its event's arrival was stamped
    (the bridge and the stamping client hear the hub at the same moment, one may run a little later).
    Latency: capture (and hub arrival) to the first moment HA showed the state.
    """
    want, seqs = expected(run.events, run.rooms, run.people)
    end = max([c.t for c in run.changes] + [e.time for e in run.events] + [0.0]) + 3600.0
    missed: dict[str, list[str]] = {}
    missed_online: dict[str, list[str]] = {}
    extra: dict[str, list[str]] = {}
    matched: list[dict[str, Any]] = []
    shown_extra: list[dict[str, Any]] = []
    for entity in entities(run.rooms, run.people):
        segs = _segments(run.changes, entity, end)
        away = [(a, b + slack) for a, b, v in segs if v in GONE]
        states = want.get(entity, [])
        lives = []
        for k, (t, value) in enumerate(states):
            start = run.arrived.get(seqs.get((entity, t), -1), t) if t > 0 else 0.0
            if k + 1 < len(states):
                t2 = states[k + 1][0]
                stop = run.arrived.get(seqs.get((entity, t2), -1), t2)
            else:
                stop = end
            lives.append((start, stop, value, t))
        for start, stop, value, t in lives:
            seen = [max(a, start) for a, b, v in segs if v == value and a <= stop + slack and b >= start]
            if seen:
                if t > 0:
                    matched.append({"entity": entity, "value": value, "event": t, "arrived": start, "ha": min(seen)})
                continue
            missed.setdefault(entity, []).append(value)
            online = (stop - start) - sum(max(0.0, min(b, stop) - max(a, start)) for a, b in away)
            if online > slack:
                missed_online.setdefault(entity, []).append(value)
        # an entity with no state before its first event (a last speaker) may show one from an earlier run
        history = lives[0][0] if lives and states[0][0] > 0 else 0.0
        for k, (a, b, value) in enumerate(segs):
            if value in GONE or b <= history + slack:
                continue
            reconnect = k > 0 and segs[k - 1][2] in GONE
            if reconnect and b - a < slack:
                continue  # the pre-outage value, shown until the retained messages arrive
            if not any(v == value and a <= stop + slack and b >= start - early for start, stop, v, _ in lives):
                extra.setdefault(entity, []).append(value)
                shown_extra.append({"entity": entity, "value": value, "from": a, "to": b,
                                    "lives": [(st, sp) for st, sp, v, _ in lives if v == value]})  # fmt: skip
    final_want = {e: (want[e][-1][1] if want.get(e) else "") for e in entities(run.rooms, run.people)}
    wrong = {e: {"ha": run.final_ha.get(e), "expected": v} for e, v in final_want.items() if run.final_ha.get(e) != v}
    wrong_retained = {e: {"broker": run.final_retained.get(e), "expected": v} for e, v in final_want.items()
                      if v and run.final_retained.get(e) != v}  # fmt: skip
    by_kind: dict[str, list[float]] = defaultdict(list)
    for m in matched:
        by_kind[_kind(m["entity"])].append(m["ha"] - m["event"])
    return {
        "expected_changes": sum(1 for v in want.values() for t, _ in v if t > 0),
        "missed": missed,
        "missed_while_ha_online": missed_online,
        "extra": extra,
        "extra_shown": shown_extra,
        "matched": matched,
        "missed_n": sum(len(v) for v in missed.values()),
        "missed_online_n": sum(len(v) for v in missed_online.values()),
        "extra_n": sum(len(v) for v in extra.values()),
        "wrong_final": wrong,
        "wrong_retained": wrong_retained,
        "latency": _pcts([m["ha"] - m["event"] for m in matched]),
        # presence stamps what a frame or an utterance decided with that capture's time, and what its
        # timers decided (left after the timeout, a count that settled) with the moment of the decision
        "latency_from_capture": _pcts([m["ha"] - m["event"] for m in matched if m["arrived"] - m["event"] > 0.05]),
        "latency_hub_to_ha": _pcts([m["ha"] - m["arrived"] for m in matched]),
        "latency_by_kind": {k: _pcts(v) for k, v in sorted(by_kind.items())},
    }


def _kind(entity: str) -> str:
    if entity.startswith("device_tracker."):
        return "person tracker"
    for suffix, kind in (
        ("_occupancy", "room occupancy"),
        ("_people", "room people"),
        ("_last_speaker", "last speaker"),
    ):
        if entity.endswith(suffix):
            return kind
    return "person room"


def _pcts(xs: Sequence[float]) -> dict[str, float | int | None]:
    from sensorium.pipeline.metrics import summary

    return summary(xs, scale=1000, digits=0, suffix="_ms", extra=("max",)) if xs else {"n": 0}


async def run_session(
    ha: Any,
    broker: Any,
    out: Path,
    *,
    restarts: int = 0,
    down_s: float = 1.0,
    cache: Path = ROOT / ".cache" / "sample",
    progress: Any = None,
) -> SessionRun:
    """Replay the sample session through the pipeline, the bridge, mosquitto and Home Assistant.

    ``restarts``: kill mosquitto this many times during the session (evenly spaced), each time down
    for ``down_s`` before it starts again on the same port.
    """
    from mosquitto import retained

    from sensorium.bridges.mqtt.bridge import Bridge
    from sensorium.bridging import gallery_people
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded
    from sensorium.evaluation.replay import ReplayOptions, load, replay_embedded
    from sensorium.evaluation.sample import prepare, sample_deployment
    from sensorium.pipeline.bus import Subscriber
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.config import MqttConfig
    from sensorium.pipeline.messages import PlaybackStatus, Presence, SpeakerIdentified, Transcript, TtsAudio

    say = progress or (lambda _s: None)
    session_path = prepare(out, cache)
    session = load([session_path])
    dep = sample_deployment(session.rooms, out)
    people = gallery_people(out / "gallery.db")()
    run = SessionRun(rooms=list(session.rooms), people=sorted(people), session_s=session.duration)
    run.labels = list(session.labels)
    tracked = set(entities(run.rooms, run.people))
    entries = await ha.request("GET", "/api/config/config_entries/entry?domain=mqtt")
    if not entries:
        await ha.add_integration("mqtt", {"broker": "127.0.0.1", "port": broker.port})

    async with embedded(dep) as env, ha.websocket() as ws:
        tasks: list[asyncio.Task[Any]] = []

        async def hub_events() -> None:
            async with Client(env.endpoints, name="bench-events", clock=env.clock) as c:
                async for ev in c.events(["presence", "speaker", "transcript", "playback"], since=0):
                    if not isinstance(ev, Transcript) or ev.final:
                        run.events.append(ev)
                        run.arrived[ev.seq] = env.clock.now()

        async def tts() -> None:
            sub = Subscriber(env.endpoints, ["tts_audio/"])
            try:
                while True:
                    msg = await sub.recv()
                    if isinstance(msg, TtsAudio) and msg.chunk == 0:
                        run.tts.append((msg.room, msg.text, env.clock.now()))
            finally:
                sub.close()

        async def ha_changes(queue: asyncio.Queue[dict[str, Any]]) -> None:
            while True:
                data = (await queue.get())["data"]
                new = data.get("new_state")
                if data["entity_id"] in tracked and new is not None:
                    run.changes.append(Change(data["entity_id"], new["state"], _ts(new["last_changed"])))

        async def restart_broker() -> None:
            for k in range(restarts):
                await asyncio.sleep(session.duration / (restarts + 1) - (down_s if k else 0.0))
                t_down = env.clock.now()
                broker.kill()
                await asyncio.sleep(down_s)
                broker.start()
                run.restarts.append({"down": t_down, "up": env.clock.now()})
                say(f"  broker restart {k + 1}/{restarts}")

        bridge = Bridge(
            MqttConfig(host="127.0.0.1", port=broker.port, site=SITE),
            run.rooms,
            env.endpoints,
            data_dir=out / f"bridge-{uuid.uuid4().hex[:8]}",  # each run has a new hub: no state to resume
            people=lambda: people,
            heartbeat=0.25,
            clock=env.clock,
        )
        tasks.append(asyncio.create_task(bridge.run(), name="bridge"))
        speakers = [EdgeAgent(dep, name, hub_address=env.address, clock=env.clock) for name in dep.edges]
        tasks += [asyncio.create_task(s.run()) for s in speakers]
        tasks += [asyncio.create_task(hub_events()), asyncio.create_task(tts())]
        try:
            for e in sorted(tracked):  # discovery reached Home Assistant and the first states with it
                if not e.endswith("_last_speaker"):  # published once someone spoke
                    await ha.wait_for_state(e, lambda s: s is not None and s["state"] not in GONE, timeout=30)
            queue = await ws.subscribe_events("state_changed")
            tasks.append(asyncio.create_task(ha_changes(queue)))
            for e, s in (await ha.states()).items():
                # a last speaker shown now is from an earlier run (retained on the broker): history, not this run
                if e in tracked and not e.endswith("_last_speaker"):
                    run.changes.append(Change(e, s["state"], _ts(s["last_changed"])))
            tasks.append(asyncio.create_task(restart_broker()))
            say(f"  replaying {session.name} ({session.duration:.0f} s) in real time, {restarts} broker restart(s)")
            replayed = await replay_embedded(session, ReplayOptions(speed=1, settle=4.0), env)
            run.offset = -replayed.to_session(0.0)
            await tasks[-1]  # the restarts are done
            # everyone leaves (left_after) and Home Assistant, reconnected, has the last word
            await asyncio.sleep(8.0)
            deadline = time.monotonic() + 15.0
            while time.monotonic() < deadline:
                states = await ha.states()
                if all(states.get(e, {}).get("state") not in GONE for e in tracked):
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)
            run.final_ha = {e: s["state"] for e, s in (await ha.states()).items() if e in tracked}
            run.final_retained = retained_states(await retained(broker.port, f"sensorium/{SITE}/#"))
        finally:
            bridge.stop()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(15):
                    await asyncio.shield(tasks[0])
            for s in speakers:
                with contextlib.suppress(Exception):
                    await s.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    run.bridge = vars(bridge.stats).copy()
    run.events = [e for e in run.events if isinstance(e, Presence | SpeakerIdentified | Transcript | PlaybackStatus)]
    return run


# ------------------------------------------------------------------------------------ CPU


async def bridge_cpu(n: int, folder: Path) -> dict[str, Any]:
    """``sensorium mqtt`` in its own process, fed ``n`` events: its CPU per 1000 events."""
    import aiomqtt
    import psutil
    from mosquitto import Mosquitto

    from sensorium.pipeline.bus import Publisher
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub
    from sensorium.pipeline.messages import FaceRecognized, Presence, SpeakerIdentified, Transcript, WakeDetected

    rooms, people = ["kitchen", "living_room", "hall"], ["alice", "bob", "carol", "dave"]
    address = f"ipc://{folder}/hub"
    hub = Hub(HubConfig(address=address, heartbeat=0.25, event_log=max(n * 2, 10000)), state_dir=folder / "hub")
    await hub.start()
    broker = Mosquitto(folder / "mqtt").start()
    deploy = folder / "deploy.toml"
    deploy.write_text(
        f'data_dir = "{folder / "data"}"\n[hub]\naddress = "{address}"\nheartbeat = "250ms"\n'
        + "".join(f'[rooms.{r}]\n[edges.{r}-pi]\nroom = "{r}"\n' for r in rooms)
        + f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\npeople = {json.dumps(people)}\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sensorium", "mqtt", "--config", str(deploy),
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    pub = Publisher(hub.endpoints)
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as obs:
            await obs.subscribe(f"sensorium/{SITE}/status")
            await obs.subscribe(f"sensorium/{SITE}/events/wake/+")
            async with asyncio.timeout(60):
                async for m in obs.messages:
                    if str(m.topic).endswith("/status") and m.payload == b"online":
                        break
            await asyncio.sleep(1.0)
            ps = psutil.Process(proc.pid)
            cpu0, t0, seq0 = sum(ps.cpu_times()[:2]), time.monotonic(), hub.log.last_seq
            now = hub.clock.now
            for i in range(n):
                room, person = rooms[i % 3], people[(i // 3) % 4]
                k = i % 10
                if k < 3:
                    state = ("entered", "present", "left")[(i // 10) % 3]
                    ev: Any = Presence(time=now(), room=room, source="p", person=person, state=state, people=1)
                elif k < 6:
                    ev = Transcript(time=now(), room=room, source="stt", utterance_id=f"u{i}", text="turn on the")
                elif k == 6:
                    ev = Transcript(
                        time=now(), room=room, source="stt", utterance_id=f"u{i}", final=True, text="lights"
                    )
                elif k == 7:
                    ev = SpeakerIdentified(time=now(), room=room, source="spk", utterance_id=f"u{i}", person=person)
                elif k == 8:
                    ev = FaceRecognized(time=now(), room=room, source="face", person=person, score=0.8, track=i)
                else:
                    ev = WakeDetected(time=now(), room=room, source="wake", word=f"w{i}", score=0.9)
                await pub.publish(ev)
                if i % 20 == 19:
                    await asyncio.sleep(0.02)  # ~1000 events/s: the hub's subscriber keeps up (no drops at its HWM)
            await pub.publish(WakeDetected(time=now(), room="hall", source="wake", word="last", score=1.0))
            await asyncio.sleep(0.5)
            last = hub.log.last_seq  # every event the hub sequenced, which the bridge must all handle
            state_file = folder / "data" / f"mqtt-{SITE}.json"
            async with asyncio.timeout(600):
                while True:
                    with contextlib.suppress(OSError, ValueError):
                        if json.loads(state_file.read_text())["seq"] >= last:
                            break
                    await asyncio.sleep(0.05)
            wall = time.monotonic() - t0
            cpu = sum(ps.cpu_times()[:2]) - cpu0
            n = last - seq0
    finally:
        pub.close()
        proc.terminate()
        try:
            async with asyncio.timeout(15):
                rc = await proc.wait()
        except TimeoutError:
            proc.kill()
            rc = await proc.wait()
        broker.stop()
        await hub.stop()
    return {
        "events": n,
        "cpu_s": round(cpu, 3),
        "cpu_ms_per_1000_events": round(cpu / n * 1000 * 1000, 1),
        "events_per_s": round(n / wall, 1),
        "wall_s": round(wall, 2),
        "exit_code_after_sigterm": rc,
    }


# ------------------------------------------------------------------------------------ run


def _summary(run: SessionRun) -> dict[str, Any]:
    cmp = compare(run)
    welcome = [t for r, text, t in run.tts if r == "kitchen" and WELCOME in text.lower()]
    return {
        "session_s": round(run.session_s, 1),
        "broker_restarts": len(run.restarts),
        "expected_state_changes": cmp["expected_changes"],
        "missed": cmp["missed_n"],
        "missed_while_ha_connected": cmp["missed_online_n"],
        "extra_or_twice": cmp["extra_n"],
        "wrong_final_states": len(cmp["wrong_final"]),
        "wrong_retained_states": len(cmp["wrong_retained"]),
        "latency_capture_to_ha": cmp["latency"],
        "latency_frame_or_audio_to_ha": cmp["latency_from_capture"],
        "latency_hub_event_to_ha": cmp["latency_hub_to_ha"],
        "latency_by_entity": cmp["latency_by_kind"],
        "details": {
            "missed": cmp["missed"],
            "missed_while_ha_connected": cmp["missed_while_ha_online"],
            "extra": cmp["extra"],
            "extra_shown": cmp["extra_shown"],
            "wrong_final": cmp["wrong_final"],
            "wrong_retained": cmp["wrong_retained"],
            "restarts": run.restarts,
        },
        "automation_greetings_spoken": len(welcome),
        "bridge": run.bridge,
    }


async def _main(quick: bool, folder: Path) -> dict[str, Any]:
    from mosquitto import Mosquitto

    from sensorium.evaluation.homeassistant import running

    result: dict[str, Any] = {"benchmark": "mqtt", "quick": quick}

    def note(s: str) -> None:
        print(s, file=sys.stderr, flush=True)

    with running(folder / "ha", HA_CONFIG) as ha:
        result["home_assistant"] = {"start_s": round(ha.start_seconds, 1), "onboard_s": round(ha.onboard_seconds, 1)}
        broker = Mosquitto(folder / "mqtt").start()
        try:
            note("mqtt: session without broker restarts (latency)")
            result["session"] = _summary(await run_session(ha, broker, folder / "s1", progress=note))
            note("mqtt: session with 5 broker restarts")
            result["restarts"] = _summary(await run_session(ha, broker, folder / "s1", restarts=5, progress=note))
        finally:
            broker.stop()
    note("mqtt: bridge CPU")
    result["cpu"] = await bridge_cpu(1000 if quick else 5000, folder / "cpu")
    return result


def run(quick: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-mqtt-") as d:
        return asyncio.run(_main(quick, Path(d)))


def render(r: dict[str, Any]) -> str:
    s, x, c, h = r["session"], r["restarts"], r["cpu"], r["home_assistant"]
    lat = s["latency_capture_to_ha"]
    hub, cap = s["latency_hub_event_to_ha"], s["latency_frame_or_audio_to_ha"]
    lines = [
        f"Home Assistant answered {h['start_s']} s after its start, onboarded in {h['onboard_s']} s",
        f"event time → HA state: p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms over {lat['n']} state changes"
        f" ({s['session_s']} s session; missed {s['missed']}, extra {s['extra_or_twice']})",
        f"  of which caused by a frame or audio ({cap['n']}): capture → HA p50 {cap.get('p50_ms')} ms,"
        f" p95 {cap.get('p95_ms')} ms; the rest are presence's timer decisions (left, settled counts)",
        f"hub event → HA state (bridge + broker + HA): p50 {hub.get('p50_ms')} ms, p95 {hub.get('p95_ms')} ms",
    ]
    for kind, v in s["latency_by_entity"].items():
        lines.append(f"  {kind:<24} p50 {v.get('p50_ms')} ms  p95 {v.get('p95_ms')} ms  (n={v['n']})")
    lines += [
        f"{x['broker_restarts']} broker restarts: {x['expected_state_changes']} state changes, HA missed {x['missed']}"
        f" ({x['missed_while_ha_connected']} while its MQTT client was connected), got {x['extra_or_twice']} it"
        f" should not have; wrong final states {x['wrong_final_states']}",
        f"bridge CPU: {c['cpu_ms_per_1000_events']} ms per 1000 events"
        f" ({c['events']} events, {c['events_per_s']} events/s)",
        f"HA automation greetings spoken in the kitchen: {s['automation_greetings_spoken']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    add_out(ap, ROOT / "benchmarks" / "results" / "mqtt.json")
    a = ap.parse_args(argv)
    res = write_results(a.out, lambda: run(a.quick))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
