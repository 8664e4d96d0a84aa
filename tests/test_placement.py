"""Placement of replicated stages: the pure assignment rules, the worker's stream gate, the config."""

from __future__ import annotations

from typing import ClassVar

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.pipeline.config import ConfigError, from_dict
from sensorium.pipeline.messages import (
    AudioChunk,
    Detections,
    Message,
    PlacementTable,
    SpeakerIdentified,
    Transcript,
    VideoFrame,
)
from sensorium.pipeline.messages import WakeDetected as Wake
from sensorium.pipeline.placement import StageSpec, StreamGate, WorkerState, assign, specs, stream_of, to_message
from sensorium.pipeline.stage import Stage

CAMS = ("cam1", "cam2", "cam3", "cam4")
DETECT = {"detect": StageSpec("camera", CAMS, (("a", 0), ("b", 0)))}
STT = {"stt": StageSpec("room", ("kitchen", "hall"), (("big", 0), ("small", 1)))}


def live(since: float = -100.0, **kw: object) -> WorkerState:
    return WorkerState(live=True, up_since=since, **kw)  # type: ignore[arg-type]


def counts(table: dict[tuple[str, str], str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for w in table.values():
        out[w] = out.get(w, 0) + 1
    return out


def test_equals_share_cameras_and_a_dead_one_gives_all_to_the_other() -> None:
    table, moves = assign(DETECT, {"a": live(), "b": live()}, {}, 0.0, 10.0)
    assert counts(table) == {"a": 2, "b": 2}
    assert {m.reason for m in moves} == {"start"}
    table, moves = assign(DETECT, {"a": live(), "b": WorkerState()}, table, 1.0, 10.0)
    assert counts(table) == {"a": 4}
    assert sorted(m.stream for m in moves) == sorted(s for (_, s), w in table.items() if w == "a" and m_old(moves, s))
    assert {m.reason for m in moves} == {"down"} and len(moves) == 2


def m_old(moves: list, stream: str) -> bool:
    return any(m.stream == stream for m in moves)


def test_returning_worker_gets_half_back_only_after_hysteresis_and_once() -> None:
    table, _ = assign(DETECT, {"a": live(), "b": WorkerState()}, {}, 0.0, 10.0)
    assert counts(table) == {"a": 4}
    workers = {"a": live(), "b": live(since=100.0)}
    for now in (100.0, 105.0, 109.9):  # back, but not settled: nothing moves
        table, moves = assign(DETECT, workers, table, now, 10.0)
        assert counts(table) == {"a": 4} and not moves
    table, moves = assign(DETECT, workers, table, 110.0, 10.0)
    assert counts(table) == {"a": 2, "b": 2}
    assert [m.reason for m in moves] == ["balance", "balance"]
    again, moves = assign(DETECT, workers, table, 111.0, 10.0)  # stable: no flapping
    assert again == table and not moves


def test_standby_takes_over_at_once_and_hands_back_at_a_boundary_after_hysteresis() -> None:
    table, _ = assign(STT, {"big": live(), "small": live()}, {}, 0.0, 10.0)
    assert set(table.values()) == {"big"}
    table, moves = assign(STT, {"big": WorkerState(), "small": live()}, table, 1.0, 10.0)
    assert set(table.values()) == {"small"} and {m.reason for m in moves} == {"down"}
    back = {"big": live(since=50.0), "small": live()}
    table, moves = assign(STT, back, table, 55.0, 10.0)
    assert set(table.values()) == {"small"} and not moves
    kitchen_busy = lambda stage, stream: stream == "kitchen"  # noqa: E731
    table, moves = assign(STT, back, table, 60.0, 10.0, kitchen_busy)
    assert table[("stt", "hall")] == "big" and table[("stt", "kitchen")] == "small"
    assert [(m.stream, m.reason) for m in moves] == [("hall", "handback")]
    table, moves = assign(STT, back, table, 61.0, 10.0)
    assert table[("stt", "kitchen")] == "big" and [m.reason for m in moves] == ["handback"]


def test_drain_and_last_degrade_step_move_at_the_boundary_and_none_left_is_said() -> None:
    start, _ = assign(STT, {"big": live(), "small": live()}, {}, 0.0, 10.0)
    busy = lambda stage, stream: stream == "kitchen"  # noqa: E731
    table, moves = assign(STT, {"big": live(drained=True), "small": live()}, start, 1.0, 10.0, busy)
    assert table == {("stt", "kitchen"): "big", ("stt", "hall"): "small"}
    assert [(m.stream, m.reason) for m in moves] == [("hall", "drained")]
    table, moves = assign(STT, {"big": live(drained=True), "small": live()}, table, 2.0, 10.0)
    assert set(table.values()) == {"small"}
    table, moves = assign(STT, {"big": live(exhausted=frozenset({"stt"})), "small": live()}, start, 1.0, 10.0)
    assert set(table.values()) == {"small"} and {m.reason for m in moves} == {"degraded"}
    # everyone on the last step: degraded service beats none
    both = {"big": live(exhausted=frozenset({"stt"})), "small": live(exhausted=frozenset({"stt"}))}
    table, moves = assign(STT, both, start, 1.0, 10.0)
    assert table == start and not moves
    # nobody left: a dead worker's streams stay put (no churn), a drained one's are given up
    table, moves = assign(STT, {"big": WorkerState(), "small": WorkerState()}, start, 1.0, 10.0)
    assert table == start and not moves
    table, moves = assign(STT, {"big": live(drained=True), "small": WorkerState()}, start, 1.0, 10.0)
    assert set(table.values()) == {""} and {m.reason for m in moves} == {"none-left"}


@settings(max_examples=300, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sets(st.sampled_from("abc")),
            st.sets(st.sampled_from("abc")),
            st.sets(st.sampled_from(CAMS)),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_stream_has_exactly_one_live_worker_whenever_one_can_serve(steps: list) -> None:
    spec = {"detect": StageSpec("camera", CAMS, (("a", 0), ("b", 0), ("c", 1)))}
    table: dict[tuple[str, str], str] = {}
    up: dict[str, float] = {}
    for i, (alive, drained, busy) in enumerate(steps):
        now = float(i * 3)
        for w in "abc":
            if w in alive:
                up.setdefault(w, now)
            else:
                up.pop(w, None)
        workers = {w: WorkerState(live=w in alive, up_since=up.get(w, 0.0), drained=w in drained) for w in "abc"}
        before = dict(table)
        table, moves = assign(spec, workers, table, now, 5.0, lambda s, c, busy=busy: c in busy)
        assert set(table) == {("detect", c) for c in CAMS}
        for (_, cam), w in table.items():
            if not w or not workers[w].live:  # none, or kept on a dead worker: only when no one can serve
                assert not [x for x in alive if x not in drained]
            if before.get(("detect", cam), "") != w:
                assert any(m.stream == cam and m.new == w for m in moves)
        settled = [w for w in "ab" if w in alive and w not in drained and now - up[w] >= 5.0]
        if settled and not busy:  # a settled preferred worker leaves nothing on the standby
            assert "c" not in table.values()


def test_stream_of_each_kind_of_input() -> None:
    assert stream_of("room", AudioChunk(room="kitchen", source="pi")) == "kitchen"
    assert stream_of("room", Wake(room="kitchen", source="w", node="pi")) == "kitchen"
    assert stream_of("room", SpeakerIdentified(room="kitchen")) is None  # every replica gets it
    assert stream_of("camera", VideoFrame(room="hall", source="cam2")) == "cam2"
    assert stream_of("camera", Detections(room="hall", source="cam2", camera="cam2")) == "cam2"
    assert stream_of("house", Transcript(room="hall")) == "*"


def _chunk(t: float) -> AudioChunk:
    return AudioChunk(room="kitchen", source="pi", time=t, data=b"\0\0" * 1280)


def test_gate_replays_what_came_after_the_last_final_of_the_old_worker() -> None:
    gate = StreamGate("small", "stt", "room", takeover_s=16.0)
    table = to_message({("stt", "kitchen"): "big"}, 1, ["big", "small"], [])
    assert gate.update(table)[0] == []
    assert not gate.owns("kitchen")
    first = [_chunk(100.0 + 0.08 * i) for i in range(10)]  # 100.0 … 100.8
    assert not any(gate.admit(m) for m in first)
    gate.observe(Transcript(room="kitchen", source="big", final=True, t1=100.4))  # big finished one
    gate.observe(Transcript(room="kitchen", source="small", final=True, t1=100.79))  # our own: ignored
    wake = Wake(room="kitchen", source="small", node="pi", time=100.6)
    assert not gate.admit(wake)
    assert gate.admit(SpeakerIdentified(room="kitchen", utterance_id="x"))
    replay, gained, lost = gate.update(to_message({("stt", "kitchen"): "small"}, 2, ["small"], []))
    assert gained == {"kitchen"} and not lost
    assert gate.owns("kitchen") and not gate.owns("hall")  # what the stage asks (StageContext.serving)
    assert replay == [m for m in first if m.time + 0.08 > 100.4] + [wake]
    assert gate.admit(_chunk(101.0))
    stale = to_message({("stt", "kitchen"): "big"}, 1, ["big"], [])
    assert gate.update(stale) == ([], set(), set())  # an older table changes nothing
    assert gate.owned == {"kitchen"}
    restarted = to_message({("stt", "kitchen"): "big"}, 1, ["big"], [], epoch="new-hub")
    assert gate.update(restarted)[2] == {"kitchen"}  # a restarted hub counts from 1 again: applied


def test_table_message_round_trips_through_the_codec() -> None:
    from sensorium.pipeline.codec import decode, encode

    msg = to_message({("detect", "cam1"): "a", ("detect", "cam2"): "b"}, 7, ["a", "b"], ["c"], ["stt/kitchen"])
    back = decode(encode(msg))
    assert isinstance(back, PlacementTable) and back.version == 7
    assert [(a.stream, a.worker) for a in back.assignments] == [("cam1", "a"), ("cam2", "b")]


def test_specs_only_for_stages_on_several_workers() -> None:
    out = specs({"stt": [("big", 0), ("small", 1)], "wake": [("small", 0)]}, {"stt": "room"}, ["k", "h"], [])
    assert list(out) == ["stt"] and out["stt"].streams == ("k", "h")


# ------------------------------------------------------------------------------------------------ config


class Opts(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


OPTS = {"wake": Opts, "stt": Opts, "detect": Opts}
BASE = {"rooms": {"kitchen": {}}, "edges": {"pi": {"room": "kitchen"}}}


def test_standby_config_gives_ranks_in_order() -> None:
    dep = from_dict(
        BASE
        | {
            "workers": {
                "big": {"stages": ["stt", "detect"], "device": ["cuda:0", "cpu"]},
                "always_on": {"stages": ["wake"], "standby": ["stt", "detect"]},
            }
        },
        OPTS,
        path="house.toml",
    )
    assert dep.replicas("stt") == [("big", 0), ("always_on", 1)]
    assert dep.replicas("wake") == [("always_on", 0)]
    assert dep.worker("always_on").runs() == ["wake", "stt", "detect"]


@pytest.mark.parametrize(
    ("workers", "stages", "expected"),
    [
        ({"w": {"stages": ["wake"], "standby": ["sst"]}}, {}, r"house.toml: \[workers.w\] standby: unknown stage"),
        ({"w": {"stages": ["wake"], "standby": ["wake"]}}, {}, r"\[workers.w\] standby: 'wake' is also in stages"),
        ({"w": {"stages": ["wake", "wake"]}}, {}, r"\[workers.w\] stages: stage 'wake' listed twice"),
        ({"w": {"stages": ["wake"]}}, {"stt": {}}, r"house.toml: \[stages.stt\] no worker runs this stage"),
    ],
)
def test_placement_config_errors_name_file_table_and_key(workers: dict, stages: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        from_dict(BASE | {"workers": workers, "stages": stages}, OPTS, path="house.toml")


def test_example_deployments_still_load_and_replicate_nothing() -> None:
    from pathlib import Path

    from sensorium.deployment import load_deployment, placement_specs

    root = Path(__file__).resolve().parent.parent
    for name in ("deploy-phase0.toml", "deploy-4gpu.toml"):
        dep = load_deployment(root / "examples" / name)
        assert placement_specs(dep) == {}


# ------------------------------------------------------------------------------------- the hub's table


async def test_hub_moves_streams_on_last_degrade_step_hands_back_and_takes_over(hub_address: str, tmp_path) -> None:
    import asyncio

    from sensorium.pipeline.client import Client
    from sensorium.pipeline.codec import from_json
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub
    from sensorium.pipeline.messages import Placement
    from sensorium.pipeline.node import NodeLink

    cfg = HubConfig(address=hub_address, heartbeat=0.1, down_after=1.0, takeover_after=0.5, handback_after=0.6)
    hub = Hub(cfg, state_dir=tmp_path / "state", placement=dict(STT))
    await hub.start()
    big = NodeLink("big", "worker", hub.endpoints, stages=["stt"], heartbeat=0.1)
    small = NodeLink("small", "worker", hub.endpoints, stages=["stt"], heartbeat=0.1)
    small.serving = ["stt"]

    async def until(worker: str, timeout: float = 5.0) -> None:
        for _ in range(int(timeout / 0.02)):
            if set(hub.assignments.values()) == {worker}:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not all on {worker}: {hub.assignments}")

    def moves() -> list[tuple[str, str, str, str]]:
        evs = [from_json(e.json) for e in hub.log.since(0, ("placement/",))]
        return [(e.stream, e.from_worker, e.to_worker, e.reason) for e in evs if isinstance(e, Placement)]

    try:
        await big.start()
        await small.start()
        await until("small")  # big is up but still loading its models: no stream for it yet
        big.serving = ["stt"]
        await until("big")  # loaded: the preferred worker takes them (after handback_after)
        big.exhausted = ["stt"]  # the stage sits on the last step of its ladder there
        await until("small")
        big.exhausted = []
        await until("big")  # after handback_after
        async with Client(hub.endpoints, name="cli") as client:
            with pytest.raises(ValueError, match=r"drain: 'nobody' runs no replicated stage \(known: big, small\)"):
                await client.placement("drain", "nobody")
            table = await client.placement("drain", "big")
            assert table.drained == ["big"] and {a.worker for a in table.assignments} == {"small"}
            table = await client.placement("undrain", "big")
            assert table.drained == []
        await until("big")
        await big.close()  # no more heartbeats: taken over after takeover_after
        await until("small")
        for _ in range(100):  # the events reach the log through the bus
            if len(moves()) >= 14:
                break
            await asyncio.sleep(0.02)
        got = moves()
        assert got[:2] == [("kitchen", "", "small", "start"), ("hall", "", "small", "start")]
        reasons = [r for _, _, _, r in got[2:]]
        expected = ["handback", "degraded", "handback", "drained", "handback", "down"]
        assert reasons == [r for r in expected for _ in range(2)]
        assert (tmp_path / "state" / "drained.json").read_text() == "[]"
    finally:
        await small.close()
        await big.close()
        await hub.stop()


def test_top_and_placement_show_where_each_stream_runs() -> None:
    from sensorium.cli.commands import placement, top

    table = to_message({("stt", "kitchen"): "big", ("stt", "hall"): ""}, 3, ["big"], ["small"], ["stt/kitchen"])
    shown = top.render({}, {"big": "up"}, table)
    assert "placement stt       hall→(none)  kitchen→big" in shown and "drained: small" in shown
    text = placement.render(table)
    assert "stt        kitchen              big              utterance in flight" in text
    assert "stt        hall                 (none)" in text and "live: big" in text
    assert "no stage runs on more than one worker" in placement.render(to_message({}, 0, [], []))
    assert "worker down and no other can serve it" in placement.render(to_message({("stt", "hall"): "big"}, 1, [], []))


async def test_a_restarted_hub_keeps_the_drain_and_places_every_stream_again(hub_address: str, tmp_path) -> None:
    import asyncio

    from sensorium.pipeline.bus import Endpoints
    from sensorium.pipeline.client import Client
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub
    from sensorium.pipeline.node import NodeLink

    cfg = HubConfig(address=hub_address, heartbeat=0.1, down_after=1.0, takeover_after=0.5, handback_after=0.6)
    links = [
        NodeLink(n, "worker", Endpoints.from_address(hub_address), stages=["stt"], heartbeat=0.1)
        for n in ("big", "small")
    ]
    for link in links:
        link.serving = ["stt"]

    async def placed(hub: Hub, want: dict) -> None:
        for _ in range(250):
            if hub.assignments == want:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{hub.assignments} != {want}")

    hub = Hub(cfg, state_dir=tmp_path / "state", placement=dict(STT))
    await hub.start()
    try:
        for link in links:
            await link.start()
        await placed(hub, {("stt", "kitchen"): "big", ("stt", "hall"): "big"})
        async with Client(hub.endpoints, name="cli") as client:
            await client.placement("drain", "big")
        await placed(hub, {("stt", "kitchen"): "small", ("stt", "hall"): "small"})
        first = await asyncio.wait_for(_table_from_bus(hub), 5)
    finally:
        await hub.stop()
    hub = Hub(cfg, state_dir=tmp_path / "state", placement=dict(STT))
    await hub.start()
    try:
        await placed(hub, {("stt", "kitchen"): "small", ("stt", "hall"): "small"})  # still drained
        again = await asyncio.wait_for(_table_from_bus(hub), 5)
        assert again.epoch != first.epoch and again.drained == ["big"]
    finally:
        for link in links:
            await link.close()
        await hub.stop()


async def _table_from_bus(hub: object) -> PlacementTable:
    from sensorium.pipeline.bus import Subscriber

    sub = Subscriber(hub.endpoints, ["placement_table/"])  # type: ignore[attr-defined]
    try:
        while True:
            msg = await sub.recv()
            if isinstance(msg, PlacementTable):
                return msg
    finally:
        sub.close()


# ------------------------------------------------------------------------------ workers honour the table


class Peak(Stage):
    """A cheap real stage serving rooms: names the loudest sample of each chunk it is given."""

    name = "peak"
    serves = "room"
    consumes: ClassVar[tuple[type[Message], ...]] = (AudioChunk,)
    degrade_steps: ClassVar[tuple[str, ...]] = ("coarse", "coarser")

    async def handle(self, msg: Message) -> None:
        import numpy as np

        peak = int(np.abs(np.frombuffer(msg.data, "<i2")).max(initial=0))  # type: ignore[attr-defined]
        await self.ctx.publish(SpeakerIdentified(room=msg.room, time=msg.time, utterance_id=str(msg.seq), score=peak))


async def test_workers_feed_a_stage_only_its_streams_and_a_last_degrade_step_moves_them(
    hub_address: str, tmp_path
) -> None:
    import asyncio

    import numpy as np

    from sensorium.pipeline.bus import Publisher, Subscriber
    from sensorium.pipeline.hub import Hub
    from sensorium.pipeline.worker import Worker

    raw = {
        "hub": {"address": hub_address, "heartbeat": "100ms", "takeover_after": "500ms", "handback_after": "500ms"},
        "rooms": {"kitchen": {}, "hall": {}},
        "edges": {"pi": {"room": "kitchen"}, "pi2": {"room": "hall"}},
        "workers": {"w1": {"stages": ["peak"]}, "w2": {"stages": [], "standby": ["peak"]}},
    }
    dep = from_dict(raw, {"peak": Opts}, {"peak": 1.0}, "test.toml")
    spec = specs({"peak": dep.replicas("peak")}, {"peak": "room"}, dep.rooms, [])
    hub = Hub(dep.hub, state_dir=tmp_path / "state", placement=spec)
    await hub.start()
    workers = [Worker(dep, n, {"peak": Peak}, endpoints=hub.endpoints, stats_interval=0.1) for n in ("w1", "w2")]
    pub = Publisher(hub.endpoints)
    sub = Subscriber(hub.endpoints, ["speaker/"])
    loud = (np.ones(1280) * 5000).astype(np.int16).tobytes()

    async def placed(worker: str) -> None:
        for _ in range(250):
            if set(hub.assignments.values()) == {worker}:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"not all on {worker}: {hub.assignments}")

    async def who_answers(n: int = 10) -> list[str]:
        while await sub.recv_timeout(0.05) is not None:
            pass
        await asyncio.sleep(0.3)  # the new table reaches both workers
        for _ in range(n):
            for room, pi in (("kitchen", "pi"), ("hall", "pi2")):
                await pub.publish(AudioChunk(room=room, source=pi, time=hub.clock.now(), data=loud))
            await asyncio.sleep(0.01)
        got = []
        while (msg := await sub.recv_timeout(0.5)) is not None:
            got.append(msg.source)
        return got

    try:
        for w in workers:
            await w.start()
        await placed("w1")
        got = await who_answers()
        assert got and set(got) == {"w1"} and len(got) == 20, got  # each chunk once, by the worker it belongs to
        runner = workers[0].runners[0]
        runner._set_level(len(Peak.degrade_steps))  # overloaded: the stage sits on its last step
        await placed("w2")
        got = await who_answers()
        assert set(got) == {"w2"} and len(got) == 20, got
        runner._set_level(0)
        await placed("w1")
        assert set(await who_answers()) == {"w1"}
    finally:
        for w in workers:
            await w.stop()
        pub.close()
        sub.close()
        await hub.stop()
