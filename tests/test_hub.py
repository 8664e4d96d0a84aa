"""The hub: registration and health, sequenced event log, exactly-once resume, bad input, CURVE."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import pytest
import zmq

from sensorium.evaluation.ports import free_port, free_tcp_base
from sensorium.pipeline import security
from sensorium.pipeline.bus import Endpoints, Publisher, Subscriber, context
from sensorium.pipeline.busguard import PublishPolicy
from sensorium.pipeline.client import Client, collect
from sensorium.pipeline.codec import CodecError, decode, encode, from_json, to_json
from sensorium.pipeline.config import HubConfig
from sensorium.pipeline.eventlog import EventLogError
from sensorium.pipeline.hub import Hub, SecurityError
from sensorium.pipeline.messages import (
    WIRE_VERSION,
    AudioChunk,
    ControlError,
    EventsLost,
    EventsReply,
    EventsRequest,
    Heartbeat,
    HeartbeatAck,
    NodeStatus,
    Say,
    Transcript,
    WakeDetected,
)
from sensorium.pipeline.node import NameInUse, NodeLink


async def _publish_wakes(pub: Publisher, n: int, start: int = 0) -> None:
    for i in range(start, start + n):
        await pub.publish(WakeDetected(room="kitchen", source="w", word=f"w{i}", score=0.9))
        await asyncio.sleep(0.002)


async def test_node_up_then_down_then_up(hub: Hub) -> None:
    sub = Subscriber(hub.endpoints, ["node_status/"])
    await asyncio.sleep(0.1)
    link = NodeLink("gpu0", "worker", hub.endpoints, heartbeat=0.1)
    await link.start()
    assert await link.wait_connected(3)
    up = await sub.recv_timeout(3)
    assert isinstance(up, NodeStatus) and (up.node, up.state) == ("gpu0", "up")
    assert link.clock.synced and link.clock.best_rtt < 0.05
    await link.close()
    down = await sub.recv_timeout(3)
    assert isinstance(down, NodeStatus) and (down.node, down.state) == ("gpu0", "down")
    link = NodeLink("gpu0", "worker", hub.endpoints, heartbeat=0.1)
    await link.start()
    again = await sub.recv_timeout(3)
    assert isinstance(again, NodeStatus) and (again.node, again.state) == ("gpu0", "up")
    await link.close()
    sub.close()


async def test_a_second_process_with_a_taken_name_is_refused_and_the_first_keeps_its_link(hub: Hub) -> None:
    """Fixed by binding a name to the connection that registered it (no ROUTER_HANDOVER, no socket identity
    from the name): before, the second link took the name's socket identity over and the first was cut off."""
    first = NodeLink("kitchen-pi", "edge", hub.endpoints, heartbeat=0.1)
    await first.start()
    assert await first.wait_connected(3)
    second = NodeLink("kitchen-pi", "edge", hub.endpoints, heartbeat=0.1)
    await second.start()
    try:
        with pytest.raises(NameInUse, match="'kitchen-pi' is in use by a running edge"):
            await second.wait_connected(1.5, raise_refused=True)
        assert "kitchen-pi" in second.refused
        acks = first._last_ack
        await asyncio.sleep(0.5)
        assert first.connected and first._last_ack > acks, "the running node lost its link to the hub"
        assert hub.nodes["kitchen-pi"].instance == first.instance
    finally:
        await second.close()
        await first.close()


async def test_a_name_is_free_once_its_node_leaves_or_goes_quiet(hub: Hub) -> None:
    """A node restarted after a crash or a network cut (its old connection half-open at the hub) gets its
    name back once the old one is down (``down_after``, 0.5 s here); one that closed cleanly frees it at once."""
    old = NodeLink("kitchen-pi", "edge", hub.endpoints, heartbeat=0.1)
    await old.start()
    assert await old.wait_connected(3)
    for t in old._tasks:  # the process froze or died: no goodbye, the connection stays open
        t.cancel()
    old._reader.cancel()
    new = NodeLink("kitchen-pi", "edge", hub.endpoints, heartbeat=0.1)
    await new.start()
    try:
        assert await new.wait_connected(3), "the hub never gave the name back"
        assert hub.nodes["kitchen-pi"].instance == new.instance
    finally:
        await new.close()
        assert old._sock is not None
        old._sock.close(0)
    again = NodeLink("kitchen-pi", "edge", hub.endpoints, heartbeat=0.1)
    await again.start()
    t0 = asyncio.get_running_loop().time()
    assert await again.wait_connected(3)
    assert asyncio.get_running_loop().time() - t0 < 0.4, "a name left cleanly waited for down_after"
    await again.close()


async def test_a_link_the_hub_stops_answering_opens_a_new_connection(tmp_path: Path) -> None:
    """Fixed by rebuilding the socket after ``quiet_after`` without an answer: the hub here answers the
    node's first connection for a while, then never again (as a hub that lost it would)."""
    ep = Endpoints.from_address(f"ipc://{tmp_path}/fake")
    router = context().socket(zmq.ROUTER)
    router.bind(ep.control)
    link = NodeLink("kitchen-pi", "edge", ep, heartbeat=0.1)
    seen: list[bytes] = []

    async def fake_hub() -> None:
        t0 = asyncio.get_running_loop().time()
        while True:
            ident, *frames = await router.recv_multipart()
            if ident not in seen:
                seen.append(ident)
            msg = decode(frames)
            deaf = ident == seen[0] and asyncio.get_running_loop().time() - t0 > 0.5
            if isinstance(msg, Heartbeat) and not deaf:
                await router.send_multipart([ident, *encode(HeartbeatAck(sent=msg.sent, hub_time=0.0))])

    task = asyncio.create_task(fake_hub())
    await link.start()
    try:
        assert await link.wait_connected(2)
        await asyncio.sleep(1.0)
        assert not link.connected
        assert await link.wait_connected(link.quiet_after + 2), "the link never opened a new connection"
        assert link.rebuilds == 1 and len(seen) == 2
    finally:
        task.cancel()
        await link.close()
        router.close(0)


async def test_events_get_increasing_hub_sequence_numbers(hub: Hub) -> None:
    async with Client(hub.endpoints) as client:
        assert await client.wait_connected(3)
        agen = client.events(["wake"])
        pub = Publisher(hub.endpoints)
        task = asyncio.create_task(collect(agen, 20, 10))
        await asyncio.sleep(0.4)
        await _publish_wakes(pub, 20)
        events = await task
        pub.close()
    assert [e.word for e in events] == [f"w{i}" for i in range(20)]
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 20


async def test_an_event_stream_cancelled_while_events_flow_ends(hub: Hub) -> None:
    """Cancelling a consumer (a client shutting down) ends it even when an event arrives in the same instant.

    Python 3.11's ``asyncio.wait_for`` returns the result of an awaitable that completed together with the
    cancellation and drops the cancellation: the consumer went on reading and whoever awaited it hung
    (the built-in agent never stopped while Home Assistant's pipeline was still publishing).
    """
    pub = Publisher(hub.endpoints)
    flooding = True

    async def flood() -> None:
        i = 0
        while flooding:
            await pub.publish(WakeDetected(room="kitchen", source="w", word=f"w{i}", score=0.9))
            i += 1
            await asyncio.sleep(0)

    async def consume(client: Client) -> None:
        async for _ in client.events(["wake"]):
            pass

    flooder = asyncio.create_task(flood())
    try:
        async with Client(hub.endpoints) as client:
            assert await client.wait_connected(3)
            for _ in range(15):
                task = asyncio.create_task(consume(client))
                await asyncio.sleep(0.3)  # subscribed, with events streaming in
                task.cancel()
                done, _ = await asyncio.wait({task}, timeout=5)
                assert done, "the cancelled event stream kept reading"
    finally:
        flooding = False
        await flooder
        pub.close()


async def test_restarted_subscriber_gets_missed_events_exactly_once(hub: Hub) -> None:
    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.2)
    async with Client(hub.endpoints) as client:
        first = client.events(["wake"], since=0)
        task = asyncio.create_task(collect(first, 10, 10))
        await asyncio.sleep(0.3)
        await _publish_wakes(pub, 10)
        got = await task
    last = got[-1].seq
    # subscriber is gone; events keep coming
    await _publish_wakes(pub, 15, start=10)
    await asyncio.sleep(0.3)
    async with Client(hub.endpoints) as client:
        resumed = client.events(["wake"], since=last)
        task = asyncio.create_task(collect(resumed, 20, 10))
        await asyncio.sleep(0.5)
        await _publish_wakes(pub, 5, start=25)
        rest = await task
    pub.close()
    words = [e.word for e in got + rest]
    assert words == [f"w{i}" for i in range(30)]  # every event once, in order


async def test_a_subscriber_away_too_long_is_told_what_it_lost_in_order(hub_address: str, tmp_path: Path) -> None:
    h = Hub(HubConfig(address=hub_address, event_log=20), state_dir=tmp_path / "s")
    await h.start()
    pub = Publisher(h.endpoints)
    async with Client(h.endpoints) as client:
        await asyncio.sleep(0.3)
        await _publish_wakes(pub, 50)
        await asyncio.sleep(0.3)
        first = h.log.first_seq
        held = [from_json(e.json) for e in h.log.entries]
        wakes = [e for e in held if isinstance(e, WakeDetected)]  # (the client's own "up" may be among them)
        assert first > 6 and len(held) == 20 and len(wakes) >= 19
        got = await collect(client.events(["wake"], since=5), 1 + len(wakes), 5)
        lost = got[0]
        assert isinstance(lost, EventsLost) and (lost.first_seq, lost.last_seq, lost.seq) == (6, first - 1, first - 1)
        assert got[1:] == wakes  # then every event still held
        # the lost item's seq is a resume point like any other: nothing twice, no second signal
        task = asyncio.create_task(collect(client.events(["wake"], since=lost.seq), len(wakes) + 2, 5))
        await asyncio.sleep(0.5)
        await _publish_wakes(pub, 2, start=50)
        again = await task
    pub.close()
    await h.stop()
    assert [e.word for e in again] == [e.word for e in got[1:]] + ["w50", "w51"]


async def test_event_log_survives_hub_restart(hub_address: str, tmp_path: Path) -> None:
    cfg = HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5)
    h = Hub(cfg, state_dir=tmp_path / "s")
    await h.start()
    pub = Publisher(h.endpoints)
    await asyncio.sleep(0.2)
    await _publish_wakes(pub, 5)
    await asyncio.sleep(0.3)
    pub.close()
    await h.stop()
    assert h.log.last_seq == 5
    # a torn last line from a power cut is dropped, the rest kept
    with open(tmp_path / "s/events.jsonl", "ab") as f:
        f.write(b'[6,"wake/kitchen/w","{\\"type')
    h2 = Hub(cfg, state_dir=tmp_path / "s")
    assert h2.log.last_seq == 5
    await h2.start()
    async with Client(h2.endpoints) as client:
        events = await collect(client.events(["wake"], since=2), 3, 5)
    await h2.stop()
    assert [e.word for e in events] == ["w2", "w3", "w4"]


async def test_a_hub_slower_than_the_retry_interval_never_makes_a_client_repeat_or_go_back(
    hub_address: str, tmp_path: Path
) -> None:
    h = Hub(HubConfig(address=hub_address, heartbeat=0.2, down_after=30), state_dir=tmp_path / "s")
    answer = h._reply

    async def slow(ident: bytes, msg: object) -> None:
        if isinstance(msg, EventsReply):
            await asyncio.sleep(2.5)  # the whole control loop waits: longer than the client's 1 s retry
        await answer(ident, msg)

    h._reply = slow  # type: ignore[method-assign]
    await h.start()
    pub = Publisher(h.endpoints)
    await asyncio.sleep(0.3)
    await _publish_wakes(pub, 5)
    async with Client(h.endpoints, heartbeat=0.2) as client:
        task = asyncio.create_task(collect(client.events(["wake"], since=0), 1000, 16))
        for start, pause in ((5, 1.0), (10, 3.5), (15, 4.0)):  # bursts while requests and retries are queued
            await asyncio.sleep(pause)
            await _publish_wakes(pub, 5, start=start)
        got = await task
    pub.close()
    await h.stop()
    seqs = [e.seq for e in got]
    assert seqs == sorted(set(seqs)), f"duplicates or out of order: {seqs}"
    assert [e.word for e in got] == [f"w{i}" for i in range(20)]
    assert client.link.stale_replies >= 1  # the late answers to retries really came, and were ignored


async def test_huge_events_requests_are_refused_and_heartbeats_stay_on_time(hub_address: str, tmp_path: Path) -> None:
    state = tmp_path / "s"
    state.mkdir()
    lines = []
    for seq in range(1, 10001):  # a full log (the default bound) to scan
        ev = WakeDetected(seq=seq, room="kitchen", source="w", word=f"w{seq}")
        lines.append(msgspec.json.encode([seq, ev.topic(), to_json(ev).decode()]) + b"\n")
    (state / "events.jsonl").write_bytes(b"".join(lines))
    hub = Hub(HubConfig(address=hub_address, event_log=10000), state_dir=state)
    await hub.start()
    raw = context().socket(zmq.DEALER)
    raw.connect(hub.endpoints.control)
    many = EventsRequest(since=0, prefixes=[chr(0x41 + i % 26) for i in range(30000)], request_id=7)
    assert len(encode(many)[1]) < 64 * 1024  # a legal message on the wire
    acks: list[float] = []
    async with NodeLink("beat", "worker", hub.endpoints, heartbeat=0.05) as link:
        assert await link.wait_connected(3)

        async def watch() -> None:
            last = link._last_ack
            while True:
                await asyncio.sleep(0.005)
                if link._last_ack != last:
                    acks.append(link._last_ack - last)
                    last = link._last_ack

        watcher = asyncio.create_task(watch())
        for _ in range(10):
            await raw.send_multipart(encode(many))
        replies = [decode(await asyncio.wait_for(raw.recv_multipart(), 10)) for _ in range(10)]
        await raw.send_multipart(encode(EventsRequest(prefixes=["wake/" + "x" * 200], request_id=8)))
        long = decode(await asyncio.wait_for(raw.recv_multipart(), 5))
        await asyncio.sleep(0.2)
        watcher.cancel()
    raw.close(0)
    await hub.stop()
    assert acks and max(acks) < 0.3, f"heartbeat answers were {max(acks):.2f}s apart while requests came in"
    assert all(isinstance(r, ControlError) and r.request_id == 7 for r in replies)
    assert "30000 prefixes, limit 64" in replies[0].reason  # type: ignore[union-attr]
    assert isinstance(long, ControlError) and long.request_id == 8 and "limit 128" in long.reason


async def test_registrations_are_checked_and_one_connection_holds_one_name(hub: Hub) -> None:
    from sensorium.pipeline.messages import Register

    raw = context().socket(zmq.DEALER)
    raw.connect(hub.endpoints.control)
    await asyncio.sleep(0.1)
    for bad in (Register(node="x" * 500, role="edge"), Register(node="pi", role="overlord")):
        await raw.send_multipart(encode(bad))
        reply = decode(await asyncio.wait_for(raw.recv_multipart(), 3))
        assert isinstance(reply, ControlError) and "register refused" in reply.reason
    for i in range(300):  # one connection renaming itself: each new name frees the one before
        await raw.send_multipart(encode(Register(node=f"fake-{i}", role="edge")))
    for _ in range(100):
        if hub.control_messages >= 302:
            break
        await asyncio.sleep(0.02)
    raw.close(0)
    assert list(hub.nodes) == ["fake-299"]


async def test_a_flood_of_names_never_locks_the_deployment_out(hub_address: str, tmp_path: Path) -> None:
    """Fixed by making room in a full table for the deployment's nodes (and by one name per connection, and
    dropping nodes down for long): before, 256 names kept alive left no room for a restarted edge."""
    from sensorium.pipeline.hub import MAX_NODES

    h = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=3.0), nodes=["kitchen-pi", "gpu0"])
    await h.start()
    flood = [NodeLink(f"fake-{i}", "client", h.endpoints, heartbeat=0.2) for i in range(MAX_NODES)]
    try:
        for link in flood:
            await link.start()
        for _ in range(200):
            if len(h.nodes) == MAX_NODES:
                break
            await asyncio.sleep(0.05)
        assert len(h.nodes) == MAX_NODES
        stranger = NodeLink("late-client", "client", h.endpoints, heartbeat=0.1)
        await stranger.start()
        with pytest.raises(NameInUse, match=f"already tracks {MAX_NODES} nodes"):
            await stranger.wait_connected(1.0, raise_refused=True)
        await stranger.close()
        edge = NodeLink("kitchen-pi", "edge", h.endpoints, heartbeat=0.1)
        await edge.start()
        assert await edge.wait_connected(3), "the deployment's edge could not register"
        await edge.close()
    finally:
        for link in flood:
            await link.close()
        await h.stop()


async def test_replies_nobody_reads_do_not_pile_up_in_the_hub(hub: Hub) -> None:
    """Fixed by a small send queue per control connection (ROUTER SNDHWM 8): before, 20 connections asking
    for big events replies without reading pinned every reply in the hub (+1.17 GB in the probe)."""
    import psutil

    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.3)
    text = "word " * 11_000
    for i in range(300):  # ~55 KB each: every events reply carries one
        await pub.publish(Transcript(room="kitchen", source="stt", text=text, final=True, seq=i + 1))
        await asyncio.sleep(0.001)
    for _ in range(200):
        if hub.log.last_seq >= 300:
            break
        await asyncio.sleep(0.05)
    pub.close()
    rss0 = psutil.Process().memory_info().rss
    socks = []
    for _ in range(20):
        raw = context().socket(zmq.DEALER)
        raw.setsockopt(zmq.SNDHWM, 0)
        raw.setsockopt(zmq.RCVHWM, 1)  # reads nothing, holds next to nothing itself
        raw.connect(hub.endpoints.control)
        socks.append(raw)
    await asyncio.sleep(0.2)
    n0 = hub.control_messages
    for k in range(200):
        for raw in socks:
            await raw.send_multipart(encode(EventsRequest(since=k, request_id=k + 1)))
    for _ in range(600):
        if hub.control_messages >= n0 + 4000:
            break
        await asyncio.sleep(0.05)
    assert hub.control_messages >= n0 + 4000
    grown = (psutil.Process().memory_info().rss - rss0) / 2**20
    async with NodeLink("probe", "client", hub.endpoints, heartbeat=0.1) as link:
        assert await link.wait_connected(3)
    for raw in socks:
        raw.close(0)
    assert grown < 60, f"the hub (this process) grew {grown:.0f} MiB holding replies nobody reads"


async def test_a_frame_larger_than_any_message_never_enters_the_bus(hub: Hub) -> None:
    """Fixed by ZMQ_MAXMSGSIZE on the hub's XSUB: before, a 20 MB frame was taken whole into the hub and
    handed to every subscriber, which refused it only after receiving it."""
    sub = Subscriber(hub.endpoints, ["audio/"])
    rogue = context().socket(zmq.PUB)
    rogue.connect(hub.endpoints.publish)
    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.3)
    await rogue.send_multipart([b"audio/kitchen/kitchen-pi", b"\x01", b"\0" * (20 << 20)])
    await asyncio.sleep(0.3)
    await pub.publish(AudioChunk(room="kitchen", source="kitchen-pi", data=b"\0" * 2560))
    got = await sub.recv_timeout(3)
    assert isinstance(got, AudioChunk) and got.source == "kitchen-pi"
    assert sub.errors == 0, "the oversized frame reached a subscriber"
    for s in (sub, pub):
        s.close()
    rogue.close(0)


async def test_the_control_loop_survives_a_request_that_fails(hub: Hub, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_a: object, **_k: object) -> list[object]:
        raise RuntimeError("disk said no")

    async with NodeLink("probe", "client", hub.endpoints, heartbeat=0.1) as link:
        assert await link.wait_connected(3)
        with monkeypatch.context() as m:
            m.setattr(hub.log, "since", broken)
            failed = await link.request(EventsRequest(since=0), 3)
        assert isinstance(failed, ControlError) and "disk said no" in failed.reason
        again = await link.request(EventsRequest(since=0), 3)  # the loop is still there
        assert isinstance(again, EventsReply) and again.request_id != failed.request_id
    assert hub.control_errors == 1


async def test_a_client_far_behind_catches_up_through_several_replies(hub_address: str, tmp_path: Path) -> None:
    h = Hub(HubConfig(address=hub_address, event_log=5000), state_dir=tmp_path / "s")
    await h.start()
    pub = Publisher(h.endpoints)
    await asyncio.sleep(0.3)
    for i in range(0, 1500, 100):
        await _publish_wakes(pub, 100, start=i)
    await asyncio.sleep(0.5)
    pub.close()
    async with Client(h.endpoints) as client:
        got = await collect(client.events(["wake"], since=0), 1500, 20)
    await h.stop()
    assert [e.word for e in got] == [f"w{i}" for i in range(1500)]  # far more than one 64 KiB reply holds


async def test_malformed_messages_are_rejected_and_hub_keeps_serving(hub: Hub) -> None:
    raw = context().socket(zmq.PUB)
    raw.connect(hub.endpoints.publish)
    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.3)
    good = encode(WakeDetected(room="kitchen", word="ok"))
    for bad in ([good[0], b"\x07garbage", b""], [good[0], b"\x01\xc1\xc1", b""], [good[0], good[1][:5], b""]):
        await raw.send_multipart(bad)
    await pub.publish(Transcript(room="kitchen", text="still here", final=True))
    await asyncio.sleep(0.3)
    assert hub.bad_messages == 3
    assert hub.log.entries[-1].json.find(b"still here") > 0
    # bad control messages get a clear answer
    dealer = context().socket(zmq.DEALER)
    dealer.connect(hub.endpoints.control)
    await dealer.send_multipart([b"ctl", b"\x01\xc1", b""])
    reply = await asyncio.wait_for(dealer.recv_multipart(), 3)
    assert b"bad message" in reply[1]
    for s in (raw, dealer):
        s.close(0)
    pub.close()


async def test_non_finite_values_never_reach_the_log(hub: Hub) -> None:
    pub = Publisher(hub.endpoints)
    with pytest.raises(CodecError, match=r"WakeDetected\.score = nan"):
        await pub.publish(WakeDetected(room="kitchen", word="made-here", score=float("nan")))
    raw = context().socket(zmq.PUB)  # a foreign publisher that does not check
    raw.connect(hub.endpoints.publish)
    await asyncio.sleep(0.3)
    bad = WakeDetected(room="kitchen", source="evil", word="from-the-wire", score=float("inf"))
    await raw.send_multipart([bad.topic().encode(), bytes([WIRE_VERSION]) + msgspec.msgpack.encode(bad), b""])
    await pub.publish(WakeDetected(room="kitchen", word="fine", score=0.9))
    await asyncio.sleep(0.3)
    raw.close(0)
    pub.close()
    assert hub.bad_messages == 1
    words = [getattr(from_json(e.json), "word", None) for e in hub.log.entries]  # every logged event decodes
    assert "fine" in words and "from-the-wire" not in words and "made-here" not in words


async def test_non_loopback_bind_without_keys_is_refused() -> None:
    h = Hub(HubConfig(address=f"tcp://0.0.0.0:{free_tcp_base()}"))
    with pytest.raises(SecurityError, match="without CURVE keys"):
        await h.start()


async def test_unenrolled_client_receives_nothing_and_publishes_nothing(tmp_path: Path) -> None:
    hub_dir = tmp_path / "hub"
    hub_pub = security.init_hub(hub_dir)
    security.new_node(tmp_path / "good", "good", hub_pub)
    security.enrol(hub_dir, tmp_path / "good/good.key")
    security.new_node(tmp_path / "evil", "evil", hub_pub)  # never enrolled
    good = security.node_keys(tmp_path / "good", "good")
    evil = security.node_keys(tmp_path / "evil", "evil")
    port = free_tcp_base()
    h = Hub(HubConfig(address=f"tcp://0.0.0.0:{port}", keys=str(hub_dir)))
    await h.start()
    ep = Endpoints.from_address(f"tcp://127.0.0.1:{port}")
    try:
        good_sub = Subscriber(ep, ["wake/"], curve=good)
        evil_sub = Subscriber(ep, ["wake/"], curve=evil)
        good_pub = Publisher(ep, curve=good)
        evil_pub = Publisher(ep, curve=evil)
        await asyncio.sleep(0.5)
        await evil_pub.publish(WakeDetected(room="kitchen", source="evil", word="intruder"))
        await good_pub.publish(WakeDetected(room="kitchen", source="good", word="friend"))  # with CURVE: as itself
        got = await good_sub.recv_timeout(3)
        assert got is not None and got.word == "friend"
        assert await good_sub.recv_timeout(0.5) is None  # the intruder's message never reached the bus
        assert await evil_sub.recv_timeout(0.5) is None  # and the intruder hears nothing
        assert all(b"intruder" not in e.json for e in h.log.entries)
        link = NodeLink("evil", "edge", ep, curve=evil, heartbeat=0.1)
        await link.start()
        assert not await link.wait_connected(1.0)
        await link.close()
        for s in (good_sub, evil_sub, good_pub, evil_pub):
            s.close()
    finally:
        await h.stop()


async def test_hub_records_the_bus_to_mcap(hub_address: str, tmp_path: Path) -> None:
    from sensorium.pipeline.messages import AudioChunk
    from sensorium.pipeline.recorder import read_all

    path = tmp_path / "bus.mcap"
    h = Hub(HubConfig(address=hub_address, record=str(path)))
    await h.start()
    pub = Publisher(h.endpoints)
    await asyncio.sleep(0.3)
    await pub.publish(AudioChunk(room="kitchen", source="pi", time=h.clock.now(), data=b"\x01\x00" * 160))
    await pub.publish(WakeDetected(room="kitchen", source="w", time=h.clock.now(), word="hey_jarvis", score=0.9))
    await asyncio.sleep(0.3)
    pub.close()
    await h.stop()
    recorded, _ = read_all([path])
    kinds = [type(r.msg).__name__ for r in recorded if r.msg is not None]
    assert "AudioChunk" in kinds and "WakeDetected" in kinds


def _full_disk(state: Path) -> None:
    """The event log's path leads to /dev/full: every write fails with ENOSPC, as on a full disk."""
    state.mkdir(parents=True, exist_ok=True)
    (state / "events.jsonl").symlink_to("/dev/full")


async def test_a_full_disk_stops_the_hub_loudly(hub_address: str, tmp_path: Path) -> None:
    _full_disk(tmp_path / "s")
    h = Hub(HubConfig(address=hub_address, heartbeat=0.1), state_dir=tmp_path / "s")
    await h.start()
    status = Subscriber(h.endpoints, ["node_status/"])
    await asyncio.sleep(0.2)
    try:
        async with NodeLink("gpu0", "worker", h.endpoints, heartbeat=0.1) as link:  # its "up" is the first event
            assert await link.wait_connected(3)
            assert h.failed is not None
            with pytest.raises(EventLogError, match="No space left on device"):
                await asyncio.wait_for(asyncio.shield(h.failed), 5)
        said = [m async for m in _drain(status, 1.0)]
    finally:
        status.close()
        await h.stop()
    assert any(isinstance(m, NodeStatus) and m.node == "hub" and m.state == "error" for m in said), said
    errors = h.metrics.registry.get_sample_value("sensorium_hub_event_log_errors_total")
    assert errors == 1 and h.metrics.registry.get_sample_value("sensorium_hub_event_log_ok") == 0
    assert "gpu0" not in [getattr(from_json(e.json), "node", "") for e in h.log.entries]  # nothing served unlogged


async def _drain(sub: Subscriber, timeout: float):  # type: ignore[no-untyped-def]
    while (msg := await sub.recv_timeout(timeout)) is not None:
        yield msg


@pytest.mark.slow
def test_sensorium_hub_exits_non_zero_when_its_log_cannot_be_written(tmp_path: Path) -> None:
    import subprocess
    import sys

    _full_disk(tmp_path / "state")
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(f'[hub]\naddress = "ipc://{tmp_path}/hub"\nheartbeat = "100ms"\n')
    hub = subprocess.Popen(
        [sys.executable, "-m", "sensorium", "hub", "--config", str(cfg), "--state", str(tmp_path / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    async def register() -> None:
        async with NodeLink("kitchen-pi", "edge", Endpoints.from_address(f"ipc://{tmp_path}/hub"), heartbeat=0.1):
            for _ in range(100):
                if hub.poll() is not None:
                    return
                await asyncio.sleep(0.1)

    try:
        asyncio.run(register())
        _, err = hub.communicate(timeout=15)
    finally:
        if hub.poll() is None:
            hub.kill()
    assert hub.returncode == 1, (hub.returncode, err[-2000:])
    assert "ERROR" in err and "No space left on device" in err and "stopped rather than run without" in err


def _listening(pid: int, port: int, timeout: float = 20.0) -> str:
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port:
                return c.laddr.ip
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.slow
@pytest.mark.parametrize("host", [None, "0.0.0.0"], ids=["default", "configured"])
def test_the_metrics_endpoint_listens_on_loopback_unless_configured(tmp_path: Path, host: str | None) -> None:
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    line = f'metrics_host = "{host}"\n' if host else ""
    cfg = tmp_path / "deploy.toml"
    cfg.write_text(f'[hub]\naddress = "ipc://{tmp_path}/hub"\nmetrics_port = {port}\n{line}')
    hub = subprocess.Popen(
        [sys.executable, "-m", "sensorium", "hub", "--config", str(cfg), "--state", str(tmp_path / "state")]
    )
    try:
        assert _listening(hub.pid, port) == (host or "127.0.0.1")
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert "sensorium_hub_event_log_ok 1.0" in body
    finally:
        hub.terminate()
        hub.wait(15)


def _curve_hub(tmp_path: Path, names: list[str]) -> tuple[Path, dict[str, security.CurveKeys]]:
    hub_dir = tmp_path / "hub"
    hub_pub = security.init_hub(hub_dir)
    keys = {}
    for n in names:
        security.new_node(tmp_path / n, n, hub_pub)
        security.enrol(hub_dir, tmp_path / n / f"{n}.key")
        keys[n] = security.node_keys(tmp_path / n, n)
    return hub_dir, keys


async def test_with_curve_a_key_speaks_only_as_its_own_node(tmp_path: Path) -> None:
    """Fixed by the ZAP handler naming each connection by its key (User-Id) and the hub checking it on
    registration: before, any enrolled key could register (and so take over) any node's name."""
    hub_dir, keys = _curve_hub(tmp_path, ["kitchen-pi", "lost", "events-cli"])
    port = free_tcp_base()
    h = Hub(HubConfig(address=f"tcp://0.0.0.0:{port}", keys=str(hub_dir), heartbeat=0.1, down_after=0.5))
    await h.start()
    ep = Endpoints.from_address(f"tcp://127.0.0.1:{port}")
    links = []
    try:
        own = NodeLink("kitchen-pi", "edge", ep, curve=keys["kitchen-pi"], heartbeat=0.1)
        links.append(own)
        await own.start()
        assert await own.wait_connected(3)
        await own.close()  # even with the name free, another key may not take it
        for name, role in (("kitchen-pi", "edge"), ("kitchen-pi", "client"), ("gpu0", "worker")):
            thief = NodeLink(name, role, ep, curve=keys["lost"], heartbeat=0.1)
            links.append(thief)
            await thief.start()
            with pytest.raises(NameInUse, match=f"key 'lost' may not speak as '{name}'"):
                await thief.wait_connected(1.0, raise_refused=True)
        cli = NodeLink("events-cli-4711", "client", ep, curve=keys["events-cli"], heartbeat=0.1)
        links.append(cli)
        await cli.start()
        assert await cli.wait_connected(3)  # one client key, one name per process
        assert h.nodes["events-cli-4711"].key == "events-cli"
    finally:
        for link in links:
            await link.close()
        await h.stop()


@pytest.mark.slow
async def test_two_sensorium_events_at_once_both_get_every_event(hub: Hub) -> None:
    """Fixed by default client names unique per process (``events-cli-<pid>``): before, the second
    ``sensorium events`` took the first's name and the first heard nothing more."""
    import sys

    address = hub.config.address
    cmd = [sys.executable, "-m", "sensorium", "events", "--hub", address, "--type", "wake", "--count", "2"]
    procs = [
        await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        for _ in range(2)
    ]
    try:
        for _ in range(300):
            if len([n for n in hub.nodes if n.startswith("events-cli-")]) == 2:
                break
            await asyncio.sleep(0.05)
        assert sorted(n for n in hub.nodes if n.startswith("events-cli-")) == sorted(
            f"events-cli-{p.pid}" for p in procs
        )
        await asyncio.sleep(1.0)  # both past their first events request
        pub = Publisher(hub.endpoints)
        await asyncio.sleep(0.2)
        await _publish_wakes(pub, 2)
        outs = [await asyncio.wait_for(p.communicate(), 20) for p in procs]
        pub.close()
        for out, err in outs:
            words = [msgspec.json.decode(line)["word"] for line in out.splitlines()]
            assert words == ["w0", "w1"], err.decode()[-2000:]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def test_a_revoked_key_is_cut_off_at_once_and_the_others_carry_on(tmp_path: Path) -> None:
    """Fixed by the hub watching ``authorized/`` and closing every connection when a key goes (the ZAP
    handler then refuses that key as they reconnect): before, a connected node kept publishing, subscribing
    and getting control answers after ``sensorium keys revoke``."""
    hub_dir, keys = _curve_hub(tmp_path, ["kitchen-pi", "lost"])
    port = free_tcp_base()
    h = Hub(HubConfig(address=f"tcp://0.0.0.0:{port}", keys=str(hub_dir), heartbeat=0.1, down_after=0.5))
    await h.start()
    ep = Endpoints.from_address(f"tcp://127.0.0.1:{port}")
    peers = {n: (NodeLink(n, "edge", ep, curve=k, heartbeat=0.1), Publisher(ep, curve=k)) for n, k in keys.items()}
    subs = {n: Subscriber(ep, ["wake/"], curve=k) for n, k in keys.items()}
    try:
        for link, _ in peers.values():
            await link.start()
            assert await link.wait_connected(3)
        await asyncio.sleep(0.3)
        for n, (_, pub) in peers.items():
            await pub.publish(WakeDetected(room="kitchen", source=n, word=f"before-{n}"))
        for sub in subs.values():
            got = {m.word for m in [await sub.recv_timeout(2), await sub.recv_timeout(2)] if m is not None}
            assert got == {"before-kitchen-pi", "before-lost"}
        assert security.revoke(hub_dir, "lost")
        await asyncio.sleep(1.5)  # the hub notices within 0.5 s; the good peers reconnect within ~0.2 s
        lost_link = peers["lost"][0]
        good_link = peers["kitchen-pi"][0]
        assert not lost_link.connected, "the revoked key still gets control answers"
        assert good_link.connected and h.nodes["lost"].state == "down"
        heard: set[str] = set()
        for _ in range(25):  # until the good peers' subscriptions are back through the new connections
            for n, (_, pub) in peers.items():
                await pub.publish(WakeDetected(room="kitchen", source=n, word=f"after-{n}"))
            while (m := await subs["kitchen-pi"].recv_timeout(0.2)) is not None:
                heard.add(m.word)  # type: ignore[attr-defined]
            if heard:
                break
        assert heard == {"after-kitchen-pi"}, f"heard {heard}: the revoked key still publishes, or the good one not"
        assert await subs["lost"].recv_timeout(0.5) is None, "the revoked key still hears the bus"
        assert not any(b"after-lost" in e.json for e in h.log.entries)
    finally:
        for link, pub in peers.values():
            await link.close()
            pub.close()
        for sub in subs.values():
            sub.close()
        await h.stop()


async def test_events_their_sender_may_not_publish_are_never_logged(hub_address: str, tmp_path: Path) -> None:
    """Fixed by the hub's publish policy (from the deployment) and by node status and placement only from
    the hub itself: before, a bus peer could log a "hub down", another room's edge events, presence in a
    room that does not exist. A small spoofing fuzz: 0 of them logged, each counted, reported as rate-limited
    ``error`` events; the real ones still logged."""
    import random

    from sensorium.pipeline.hub import PublishPolicy
    from sensorium.pipeline.messages import InputError, Placement, PlaybackStatus, Presence

    policy = PublishPolicy(
        rooms=frozenset({"kitchen", "hall"}),
        kinds={
            "kitchen-pi": frozenset({"node_status", "playback", "error"}),
            "cpu0": frozenset({"wake", "node_status"}),
        },
        edge_room={"kitchen-pi": "kitchen"},
    )
    h = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5), policy=policy)
    await h.start()
    pub = Publisher(h.endpoints)
    rng = random.Random(7)
    fakes = [
        lambda i: NodeStatus(source="hub", node="hub", role="hub", state="down", detail=f"fake {i}"),
        lambda i: NodeStatus(source="cpu0", node="kitchen-pi", role="edge", state="down", detail=f"fake {i}"),
        lambda i: Placement(source="hub", stage="stt", stream="kitchen", to_worker=f"fake{i}"),
        lambda i: WakeDetected(room="kitchen", source="intruder", word=f"fake{i}"),
        lambda i: WakeDetected(room="kitchen", source="kitchen-pi", word=f"fake{i}"),  # an edge's wake
        lambda i: Presence(room="attic", source="cpu0", person=f"fake{i}", state="entered"),
        lambda i: PlaybackStatus(room="hall", source="kitchen-pi", state="stopped", played_text=f"fake{i}"),
        lambda i: Transcript(room="kitchen", source="kitchen-pi", text=f"fake{i}", final=True),
    ]
    try:
        await asyncio.sleep(0.3)
        for i in range(400):
            await pub.publish(rng.choice(fakes)(i))
        await pub.publish(WakeDetected(room="kitchen", source="cpu0", word="real"))
        await pub.publish(NodeStatus(source="kitchen-pi", node="kitchen-pi", role="edge", state="up", detail="real"))
        link = NodeLink("gpu9", "worker", h.endpoints, heartbeat=0.1)  # the hub's own status of a node: logged
        await link.start()
        assert await link.wait_connected(3)
        for _ in range(100):
            if h.rejected >= 400 and any(b'"gpu9"' in e.json for e in h.log.entries):
                break
            await asyncio.sleep(0.05)
        await link.close()
        logged = [from_json(e.json) for e in h.log.entries]
        assert not [e for e in logged if "fake" in to_json(e).decode()], "a spoofed event was logged"
        assert h.rejected == 400
        assert any(isinstance(e, WakeDetected) and e.word == "real" for e in logged)
        assert any(isinstance(e, NodeStatus) and e.node == "kitchen-pi" and e.detail == "real" for e in logged)
        assert any(isinstance(e, NodeStatus) and e.node == "gpu9" and e.source == "hub" for e in logged)
        errors = [e for e in logged if isinstance(e, InputError) and e.stage == "hub"]
        assert errors and all(e.reason.startswith("refused: ") for e in errors), [e.reason for e in errors]
        assert len(errors) < 100 and sum(1 + e.suppressed for e in errors) <= 400  # rate-limited, counted
    finally:
        pub.close()
        await h.stop()


async def test_the_hubs_first_events_are_never_lost(hub_address: str, tmp_path: Path) -> None:
    """Fixed by the hub waiting at start until its own probe came back through the bus to its tap: before, what
    it published in its first milliseconds went out before the subscriptions had arrived and was dropped."""
    for _ in range(5):
        h = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5))
        await h.start()
        try:
            await h.publish_own(NodeStatus(source="hub", node="first", role="edge", state="up", time=h.clock.now()))
            for _ in range(60):
                if h.log.last_seq:
                    break
                await asyncio.sleep(0.05)
            assert [from_json(e.json).node for e in h.log.entries] == ["first"]  # type: ignore[attr-defined]
        finally:
            await h.stop()


async def test_events_lost_on_the_way_to_the_log_are_counted_and_reported(hub: Hub) -> None:
    """Fixed by checking each topic's numbers in the tap: before, a drop at a high-water mark was silent."""
    from sensorium.pipeline.messages import InputError

    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.3)
    for seq in (1, 2, 3, 10, 11):  # 4..9 never arrive
        await pub.publish(WakeDetected(room="kitchen", source="w", word=f"w{seq}", seq=seq))
    for _ in range(60):
        if hub.tap_lost:
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.3)
    pub.close()
    assert hub.tap_lost == 6
    errors = [from_json(e.json) for e in hub.log.entries if e.topic.startswith("error/")]
    assert any(isinstance(e, InputError) and "lost: 6 events" in e.reason for e in errors)


async def test_a_client_resuming_into_a_replaced_log_re_bases_and_says_so(hub_address: str, tmp_path: Path) -> None:
    """Fixed by the log's epoch (a random id kept beside its file, sent with every events reply): before, a
    client resuming after number 5 into a deleted and restarted log saw nothing until it passed 5 again."""
    state = tmp_path / "state"
    cfg = HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5)
    h = Hub(cfg, state_dir=state)
    await h.start()
    pub = Publisher(h.endpoints)
    await asyncio.sleep(0.2)
    await _publish_wakes(pub, 5)
    async with Client(h.endpoints) as client:
        got = await collect(client.events(["wake"], since=0), 5, 10)
        old_epoch = client.epoch
    assert [e.seq for e in got] == [1, 2, 3, 4, 5] and len(old_epoch) == 16
    pub.close()
    await h.stop()
    (state / "events.jsonl").unlink()  # deleted (or replaced): its numbers start again

    h = Hub(cfg, state_dir=state)
    await h.start()
    assert h.log.epoch != old_epoch
    pub = Publisher(h.endpoints)
    await asyncio.sleep(0.2)
    await _publish_wakes(pub, 2, start=100)
    try:
        async with Client(h.endpoints) as client:
            got = await collect(client.events(["wake"], since=5, epoch=old_epoch), 3, 10)
        assert isinstance(got[0], EventsLost) and got[0].epoch == h.log.epoch and got[0].seq == 0
        assert [(e.seq, e.word) for e in got[1:]] == [(1, "w100"), (2, "w101")]  # type: ignore[attr-defined]
        assert client.epoch == h.log.epoch and client.last_seq == 2
    finally:
        pub.close()
        await h.stop()
    h = Hub(cfg, state_dir=state)  # restarted with its log: the same epoch
    assert h.log.epoch == client.epoch
    h.log.close()


async def test_a_publisher_that_waits_until_ready_loses_nothing_it_sends_at_once(hub: Hub) -> None:
    # A PUB socket drops what it sends before the proxy's subscription reaches it: without the wait,
    # about half of these first messages were lost (a Wyoming request the moment the gateway is up).
    sub = Subscriber(hub.endpoints, ["say/"])
    await asyncio.sleep(0.3)  # the subscriber's own subscription reaches the proxy
    got = []
    try:
        for i in range(10):
            pub = Publisher(hub.endpoints)
            try:
                assert await pub.wait_ready()
                await pub.publish(Say(source=f"gateway-{i}", answer_id="a1", text="hello", reply_to="gw"))
                async with asyncio.timeout(5):
                    got.append(await sub.recv())
            finally:
                pub.close()
    finally:
        sub.close()
    assert [m.source for m in got] == [f"gateway-{i}" for i in range(10)]


def _bus_fuzz_policy() -> PublishPolicy:
    return PublishPolicy(
        rooms=frozenset({"kitchen", "hall"}),
        kinds={
            "kitchen-pi": frozenset({"node_status", "playback", "error"}),
            "hall-pi": frozenset({"node_status", "playback", "error"}),
            "cpu0": frozenset({"wake", "detections", "node_status", "error"}),
        },
        edge_room={"kitchen-pi": "kitchen", "hall-pi": "hall"},
    )


FAKE_T = 7000.0
"""Fakes carry a capture time from here on; real messages below it."""


async def _heard_on_the_bus(
    ep: Endpoints,
    watcher: Subscriber,
    send: list[tuple[Publisher, object]],
    real: list[tuple[Publisher, object]],
    h: Hub,
    expect_refused: int,
) -> tuple[list[object], list[object]]:
    """Publish the real messages until the watcher hears them, then every fake, then the real ones again;
    return (fakes heard, real heard)."""
    fakes_heard: list[object] = []
    real_heard: list[object] = []

    async def drain(timeout: float) -> None:
        while (m := await watcher.recv_timeout(timeout)) is not None:
            if m.time < 1e6:  # type: ignore[attr-defined]  # (not the hub's own reports of what it refused)
                (fakes_heard if m.time >= FAKE_T else real_heard).append(m)  # type: ignore[attr-defined]

    for _ in range(30):  # until the subscriptions are through to every publisher
        for pub, msg in real:
            await pub.publish(msg)  # type: ignore[arg-type]
        await drain(0.1)
        if {type(m) for m in real_heard} >= {type(m) for _, m in real}:
            break
    for i, (pub, msg) in enumerate(send):
        await pub.publish(msg)  # type: ignore[arg-type]
        if i % 50 == 0:
            await drain(0.0)
    real_heard.clear()
    for pub, msg in real:
        await pub.publish(msg)  # type: ignore[arg-type]
    await drain(0.5)
    for _ in range(60):
        if getattr(h, "bus_rejected", 0) >= expect_refused:  # (an old hub has no such count)
            break
        await asyncio.sleep(0.05)
    await drain(0.2)
    return fakes_heard, real_heard


async def test_with_curve_nothing_reaches_the_bus_that_its_sender_may_not_publish(tmp_path: Path) -> None:
    """Fixed by the hub's checking forwarder (``pipeline.busguard``), which reads the key each message came in
    under: before, libzmq's proxy passed every message on and dropped who sent it, so any enrolled key could
    stream audio and video as another room's edge and publish events in another node's name (the tap only saw
    the claimed source). A spoofing fuzz of 600 messages from three keys: 0 reach a subscriber, 0 are logged,
    each is counted and reported in rate-limited ``error`` events; the real traffic beside them flows."""
    import random

    from sensorium.pipeline.messages import Detections, InputError, Placement, PlacementTable, Presence, VideoFrame

    hub_dir, keys = _curve_hub(tmp_path, ["kitchen-pi", "hall-pi", "cpu0", "lost", "events-cli"])
    port = free_tcp_base()
    h = Hub(
        HubConfig(address=f"tcp://0.0.0.0:{port}", keys=str(hub_dir), heartbeat=0.1, down_after=0.5),
        policy=_bus_fuzz_policy(),
    )
    await h.start()
    ep = Endpoints.from_address(f"tcp://127.0.0.1:{port}")
    pubs = {n: Publisher(ep, curve=keys[n]) for n in ("kitchen-pi", "hall-pi", "cpu0", "lost")}
    watcher = Subscriber(ep, [""], curve=keys["events-cli"])  # everything on the bus
    pcm = b"\x01\x00" * 1280

    def t(i: int) -> float:
        return FAKE_T + i

    fakes = [
        # an edge streaming as another edge, or into another room under its own name
        lambda i: ("kitchen-pi", AudioChunk(room="hall", source="hall-pi", time=t(i), data=pcm)),
        lambda i: ("kitchen-pi", AudioChunk(room="hall", source="kitchen-pi", time=t(i), data=pcm)),
        lambda i: ("kitchen-pi", VideoFrame(room="hall", source="hall-pi", time=t(i), data=b"jpeg")),
        # an edge publishing a worker's events, the hub's status, placement
        lambda i: ("kitchen-pi", WakeDetected(room="kitchen", source="kitchen-pi", word="fake", time=t(i))),
        lambda i: ("kitchen-pi", NodeStatus(source="hub", node="hub", role="hub", state="down", time=t(i))),
        lambda i: ("hall-pi", Placement(source="hub", stage="stt", stream="hall", to_worker="x", time=t(i))),
        lambda i: ("hall-pi", PlacementTable(source="hub", time=t(i))),
        lambda i: ("hall-pi", Detections(room="hall", source="hall-pi", camera="hall-pi", time=t(i))),
        # a worker streaming as an edge, speaking as an edge, publishing what its stages do not
        lambda i: ("cpu0", AudioChunk(room="kitchen", source="kitchen-pi", time=t(i), data=pcm)),
        lambda i: ("cpu0", WakeDetected(room="hall", source="hall-pi", word="fake", time=t(i))),
        lambda i: ("cpu0", NodeStatus(source="kitchen-pi", node="kitchen-pi", role="edge", state="down", time=t(i))),
        lambda i: ("cpu0", Presence(room="kitchen", source="cpu0", person="fake", state="entered", time=t(i))),
        lambda i: ("cpu0", Detections(room="attic", source="kitchen-pi", camera="kitchen-pi", time=t(i))),
        # an enrolled key that is no node of the deployment, as each of them
        lambda i: ("lost", WakeDetected(room="kitchen", source="cpu0", word="fake", time=t(i))),
        lambda i: ("lost", AudioChunk(room="kitchen", source="kitchen-pi", time=t(i), data=pcm)),
        lambda i: ("lost", VideoFrame(room="hall", source="hall-pi", time=t(i), data=b"jpeg")),
        lambda i: ("lost", WakeDetected(room="kitchen", source="lost", word="fake", time=t(i))),
        lambda i: ("lost", AudioChunk(room="kitchen", source="lost", time=t(i), data=pcm)),
        lambda i: ("lost", InputError(source="cpu0", stage="wake", reason="fake", time=t(i))),
    ]
    real = [
        (pubs["kitchen-pi"], AudioChunk(room="kitchen", source="kitchen-pi", time=1.0, data=pcm)),
        (pubs["hall-pi"], VideoFrame(room="hall", source="hall-pi", time=1.0, data=b"jpeg")),
        (pubs["cpu0"], WakeDetected(room="kitchen", source="cpu0", word="real", time=1.0)),
        (pubs["cpu0"], Detections(room="kitchen", source="kitchen-pi", camera="kitchen-pi", persons=1, time=1.0)),
        (pubs["hall-pi"], NodeStatus(source="hall-pi", node="hall-pi", role="edge", state="up", time=1.0)),
    ]
    rng = random.Random(11)
    sent = []
    for i in range(600):
        who, msg = rng.choice(fakes)(i)
        sent.append((pubs[who], msg))
    try:
        await asyncio.sleep(0.3)
        fakes_heard, real_heard = await _heard_on_the_bus(ep, watcher, sent, real, h, 600)
        assert not fakes_heard, f"{len(fakes_heard)} of 600 fakes reached the bus, e.g. {fakes_heard[:3]}"
        assert {type(m) for m in real_heard} == {type(m) for _, m in real}, real_heard
        logged = [from_json(e.json) for e in h.log.entries]
        assert not [e for e in logged if FAKE_T <= e.time < 1e6], "a spoofed event was logged"
        assert any(isinstance(e, Detections) and e.camera == "kitchen-pi" for e in logged)  # a stage's per-camera topic
        assert h.bus_rejected == 600
        errors = [e for e in logged if isinstance(e, InputError) and e.stage == "hub"]
        assert errors and all(e.reason.startswith("refused: ") for e in errors), [e.reason for e in errors]
        assert any("key 'lost' may not publish as 'kitchen-pi'" in e.reason for e in errors), [e.reason for e in errors]
        assert len(errors) < 150 and sum(1 + e.suppressed for e in errors) <= 600  # rate-limited, counted
    finally:
        for p in pubs.values():
            p.close()
        watcher.close()
        await h.stop()


async def test_without_curve_streams_and_events_the_policy_refuses_never_reach_the_bus(
    hub_address: str, tmp_path: Path
) -> None:
    """Fixed by the checking forwarder: before, the publish policy only kept refused events out of the log —
    they still reached every stage on the bus (a fake wake word for the arbiter, audio of a room that does not
    exist for the wake stage). Without keys the sender is not known, so this is what the claimed source allows."""
    from sensorium.pipeline.messages import Presence, VideoFrame

    h = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5), policy=_bus_fuzz_policy())
    await h.start()
    pub = Publisher(h.endpoints)
    watcher = Subscriber(h.endpoints, ["audio/", "video/", "wake/", "presence/"])
    pcm = b"\x01\x00" * 1280
    fakes = [
        AudioChunk(room="attic", source="kitchen-pi", time=FAKE_T, data=pcm),
        AudioChunk(room="hall", source="kitchen-pi", time=FAKE_T, data=pcm),
        AudioChunk(room="kitchen", source="intruder", time=FAKE_T, data=pcm),
        VideoFrame(room="kitchen", source="cpu0", time=FAKE_T, data=b"jpeg"),
        WakeDetected(room="kitchen", source="kitchen-pi", word="fake", time=FAKE_T),
        WakeDetected(room="kitchen", source="intruder", word="fake", time=FAKE_T),
        Presence(room="hall", source="cpu0", person="fake", state="entered", time=FAKE_T),
    ]
    real = [
        (pub, AudioChunk(room="kitchen", source="kitchen-pi", time=1.0, data=pcm)),
        (pub, VideoFrame(room="hall", source="hall-pi", time=1.0, data=b"jpeg")),
        (pub, WakeDetected(room="kitchen", source="cpu0", word="real", time=1.0)),
    ]
    try:
        await asyncio.sleep(0.3)
        sent = [(pub, fakes[i % len(fakes)]) for i in range(140)]
        fakes_heard, real_heard = await _heard_on_the_bus(h.endpoints, watcher, sent, real, h, 140)
        assert not fakes_heard, f"{len(fakes_heard)} of 140 fakes reached the bus, e.g. {fakes_heard[:3]}"
        assert {type(m) for m in real_heard} == {type(m) for _, m in real}, real_heard
        assert h.bus_rejected == 140
    finally:
        pub.close()
        watcher.close()
        await h.stop()


def test_the_deployments_policy_logs_a_cameras_detections_and_binds_each_stream_to_its_edge() -> None:
    """Fixed by the policy knowing each edge's cameras: before, a hub started from a deployment file refused
    every ``detections`` event (the detect stage publishes on the camera's topic, ``detections/<room>/<camera>``,
    and a camera was "no node of the deployment"), so no detection was ever logged."""
    from sensorium.deployment import deployment_from_dict, publish_policy
    from sensorium.pipeline.busguard import BusGuard
    from sensorium.pipeline.messages import Detections

    dep = deployment_from_dict(
        {
            "rooms": {"kitchen": {}, "hall": {}},
            "edges": {
                "kitchen-pi": {"room": "kitchen", "microphone": {}, "cameras": {"kitchen-cam": {"source": 0}}},
                "hall-pi": {"room": "hall", "microphone": {}},
            },
            "workers": {"cpu0": {"stages": ["detect", "wake"]}},
        },
        "<test>",
    )
    policy = publish_policy(dep)
    assert policy is not None
    assert policy.problem(Detections(room="kitchen", source="kitchen-cam", camera="kitchen-cam", persons=1)) is None
    assert policy.problem(Detections(room="hall", source="kitchen-cam", camera="kitchen-cam")) is not None
    guard = BusGuard(policy)
    assert guard.check("kitchen-pi", b"video/kitchen/kitchen-cam") is None  # its own camera
    assert guard.check("cpu0", b"detections/kitchen/kitchen-cam") is None  # the detect stage, per camera
    assert guard.check("hall-pi", b"video/kitchen/kitchen-cam") == "key 'hall-pi' may not publish as 'kitchen-cam'"
    assert guard.check("kitchen-pi", b"detections/kitchen/kitchen-cam") is not None  # an edge detects nothing
    assert guard.check(None, b"video/hall/kitchen-cam") is not None  # claimed, in the wrong room
    assert guard.check(None, b"video/kitchen/kitchen-cam") is None
