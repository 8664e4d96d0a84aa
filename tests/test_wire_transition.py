"""One name per message on the wire, and the transition for peers updated later (an edge not updated yet).

Six messages on the bus once had a topic family other than their public ``type`` (``status`` for
``node_status``, ``tts`` for ``tts_audio`` …). They travel under their ``type`` now. An edge of the previous
version still publishes its status under ``status/`` and still subscribes to ``tts/<room>/`` and
``stop/<room>/`` for what it plays: both keep working, on real sockets through the hub's proxy.
"""

from __future__ import annotations

import asyncio

import zmq
import zmq.asyncio

from sensorium.pipeline import codec
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import NodeStatus, StopPlayback, TtsAudio, WakeDetected


async def test_an_edge_not_updated_yet_is_heard_and_hears_its_answers(hub: Hub) -> None:
    ctx = zmq.asyncio.Context.instance()
    old_pub = ctx.socket(zmq.PUB)  # an edge of the previous version: old topics, raw frames
    old_pub.connect(hub.endpoints.publish)
    old_sub = ctx.socket(zmq.SUB)
    for prefix in (b"tts/kitchen/", b"stop/kitchen/"):
        old_sub.setsockopt(zmq.SUBSCRIBE, prefix)
    old_sub.connect(hub.endpoints.subscribe)
    statuses = Subscriber(hub.endpoints, ["node_status/kitchen/"])
    answers = Subscriber(hub.endpoints, ["tts_audio/kitchen/", "stop_playback/kitchen/"])
    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.3)  # subscriptions reach the publishers through the proxy
    try:
        # the old edge's status, under its old topic: accepted as what it is
        status = NodeStatus(room="kitchen", source="kitchen-pi", node="kitchen-pi", role="edge", detail="old edge")
        frames = codec.encode(status)
        assert frames[0] == b"node_status/kitchen/kitchen-pi"
        await old_pub.send_multipart([b"status/kitchen/kitchen-pi", frames[1], frames[2]])
        got = await statuses.recv_timeout(3)
        assert isinstance(got, NodeStatus) and (got.node, got.detail) == ("kitchen-pi", "old edge")

        # an answer and a barge-in stop from this version: the old edge gets them on its old topics …
        await pub.publish(TtsAudio(room="kitchen", source="tts", answer_id="a1", text="Hello.", data=b"\0\0" * 160))
        await pub.publish(StopPlayback(room="kitchen", source="agent", answer_id="a1"))
        old_topics = []
        for _ in range(2):
            raw = await asyncio.wait_for(old_sub.recv_multipart(), 3)
            old_topics.append(raw[0])
            assert isinstance(codec.decode(raw), TtsAudio | StopPlayback)
        assert old_topics == [b"tts/kitchen/tts", b"stop/kitchen/agent"]
        # … and an edge of this version gets each once, under its one name
        first, second = await answers.recv_timeout(3), await answers.recv_timeout(3)
        assert isinstance(first, TtsAudio) and first.text == "Hello." and isinstance(second, StopPlayback)
        await pub.publish(WakeDetected(room="kitchen", source="wake", word="hey_jarvis", score=0.9))
        assert await answers.recv_timeout(0.5) is None  # no second copy of either
    finally:
        for s in (old_pub, old_sub):
            s.close(0)
        for s in (statuses, answers):
            s.close()
        pub.close()
