"""The built-in agent and the OpenAI-compatible example agent, alone and over a real hub."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from sensorium.apps.agent import AgentLoop, BuiltinAgent, time_in_words, who_is_where
from sensorium.pipeline.bus import Publisher, Subscriber
from sensorium.pipeline.client import Client
from sensorium.pipeline.hub import Hub
from sensorium.pipeline.messages import AudioChunk, PlaybackStatus, Presence, Say, Transcript, WakeArbitrated

ROOT = Path(__file__).resolve().parent.parent


def load_example():
    spec = importlib.util.spec_from_file_location("openai_agent", ROOT / "examples" / "openai_agent.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


oa = load_example()

HOME = [
    Presence(time=1, room="kitchen", person="Alice", state="entered"),
    Presence(time=2, room="office", person="Bob", state="present"),
    Presence(time=3, room="hall", person="unknown", unknown=1, people=1),
]


# ------------------------------------------------------------------------------- built-in agent


@pytest.mark.parametrize(
    ("hh", "mm", "spoken"),
    [
        (9, 0, "It is nine o'clock in the morning."),
        (9, 20, "It is twenty minutes past nine in the morning."),
        (14, 45, "It is a quarter to three in the afternoon."),
        (23, 59, "It is one minute to twelve at night."),
        (0, 30, "It is half past twelve at night."),
        (18, 1, "It is one minute past six in the evening."),
    ],
)
def test_time_is_spoken_in_words(hh: int, mm: int, spoken: str) -> None:
    assert time_in_words(dt.datetime(2026, 11, 24, hh, mm)) == spoken


def test_builtin_agent_answers() -> None:
    agent = BuiltinAgent(now=lambda: dt.datetime(2026, 11, 24, 9, 20))
    ask = lambda q, **kw: agent.answer(q, presence=HOME, **kw)  # noqa: E731
    assert ask("What time is it?") == "It is twenty minutes past nine in the morning."
    assert ask("what's the date today") == "Today is Tuesday, November 24."
    assert ask("Who is home?") == (
        "Alice is in the kitchen and Bob is in the office, and there is one person I don't recognize in the hall."
    )
    assert ask("Where is Bob?") == "Bob is in the office."
    assert ask("where's carol") == "I haven't seen Carol recently."
    assert ask("Repeat after me: the parcel is at the door.") == "The parcel is at the door."
    assert ask("Say, dinner is ready!") == "Dinner is ready!"
    assert ask("Hello", speaker="Alice") == "Hello Alice! How can I help?"
    assert ask("Hello", speaker="unknown") == "Hello! How can I help?"
    assert ask("Order me a pizza.").startswith("Sorry, I can't help with that yet.")
    assert ask("  ") == ""
    assert agent.answer("Who is home?") == "I don't see anyone at home right now."
    assert agent.needs_presence("where is alice") and not agent.needs_presence("what time is it")


def test_presence_snapshot_follows_moves_and_departures() -> None:
    events = [
        *HOME,
        Presence(time=4, room="kitchen", person="Alice", state="left"),
        Presence(time=5, room="garden", person="Alice", state="entered"),
        Presence(time=6, room="office", person="Bob", state="left"),
        Presence(time=7, room="hall", person="unknown", state="left"),
    ]
    assert who_is_where(events) == ({"Alice": "garden"}, {})


# --------------------------------------------------------------------------- agent over the hub


async def _wait_presence(client: Client, n: int) -> None:
    """Wait until the hub's snapshot holds ``n`` entries (the publisher's first messages can take a moment)."""
    async with asyncio.timeout(5):
        while len(await client.snapshot()) < n:
            await asyncio.sleep(0.05)


async def _next_say(sub: Subscriber, timeout: float = 5.0) -> Say:
    while True:
        msg = await sub.recv_timeout(timeout)
        assert msg is not None, "no Say on the bus"
        if isinstance(msg, Say):
            return msg


async def test_builtin_agent_answers_in_the_room_the_question_came_from(hub: Hub) -> None:
    pub = Publisher(hub.endpoints)
    says = Subscriber(hub.endpoints, ["say/"])
    await asyncio.sleep(0.3)  # let the publisher connect before the first event
    for p in HOME:
        await pub.publish(Presence(room=p.room, person=p.person, state=p.state, unknown=p.unknown, time=time.time()))
    async with Client(hub.endpoints, name="agent-test") as client:
        assert await client.wait_connected(5)
        await _wait_presence(client, 3)
        loop = AgentLoop(client, agent=BuiltinAgent(now=lambda: dt.datetime(2026, 11, 24, 18, 0)))
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop=stop))
        await asyncio.sleep(0.5)
        t1 = client.clock.now()
        await pub.publish(Transcript(room="office", utterance_id="u1", text="who is home", final=False))
        await pub.publish(Transcript(room="office", utterance_id="u1", text="Who is home?", final=True, t1=t1))
        say = await _next_say(says)
        assert (say.room, say.more) == ("office", False)
        assert say.text.startswith("Alice is in the kitchen and Bob is in the office")
        await pub.publish(Transcript(room="kitchen", utterance_id="u2", text="What time is it?", final=True, t1=t1))
        say2 = await _next_say(says)
        assert (say2.room, say2.text) == ("kitchen", "It is six o'clock in the evening.")
        # A barge-in report tells the agent what was heard of its answer.
        await pub.publish(PlaybackStatus(room="kitchen", answer_id=say2.answer_id, state="stopped", played_text=""))
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 5)
    pub.close()
    says.close()
    assert [t.room for t in loop.turns] == ["office", "kitchen"]  # the partial was not answered
    assert loop.turns[1].cut_off == "" and loop.turns[0].cut_off is None
    assert 0 <= loop.turns[0].said_at - loop.turns[0].speech_end < 2.0


async def test_rooms_that_stood_down_do_not_get_a_second_answer(hub: Hub) -> None:
    pub = Publisher(hub.endpoints)
    says = Subscriber(hub.endpoints, ["say/"])
    await asyncio.sleep(0.3)
    async with Client(hub.endpoints, name="agent-test") as client:
        assert await client.wait_connected(5)
        loop = AgentLoop(client, agent=BuiltinAgent(now=lambda: dt.datetime(2026, 11, 24, 7, 30)))
        stop = asyncio.Event()
        task = asyncio.create_task(loop.run(stop=stop))
        await asyncio.sleep(0.5)
        wake = client.clock.now()
        # Both rooms heard "hey jarvis, what time is it"; the kitchen won, the office stood down.
        await pub.publish(
            WakeArbitrated(
                room="kitchen", node="kitchen-pi", wake_time=wake, losers=["office-pi"], loser_rooms=["office"]
            )
        )
        for room in ("office", "kitchen"):
            await pub.publish(Transcript(room=room, text="What time is it?", final=True, t0=wake - 2.0, t1=wake + 1.5))
        say = await _next_say(says)
        assert (say.room, say.text) == ("kitchen", "It is half past seven in the morning.")
        # The next question in the office (a later wake) is answered there.
        await pub.publish(Transcript(room="office", text="What time is it?", final=True, t0=wake + 3, t1=wake + 6))
        say2 = await _next_say(says)
        assert say2.room == "office"
        stop.set()
        await asyncio.wait_for(task, 5)
    pub.close()
    says.close()
    assert [t.room for t in loop.turns] == ["kitchen", "office"]
    assert [t.room for t in loop.skipped] == ["office"]


# ------------------------------------------------------------------------ OpenAI-compatible example

MODEL_TEXT = "It is sunny in the garden. Alice is there with the dog. Anything else?"


def sse_events(text: str) -> Iterator[bytes]:
    yield b": keep-alive\n\n"
    yield b'data: {"id":"c1","choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    words = text.split(" ")
    for i, w in enumerate(words):
        piece = w if i == 0 else " " + w
        yield f"data: {json.dumps({'id': 'c1', 'choices': [{'index': 0, 'delta': {'content': piece}}]})}\n\n".encode()
    yield b'data: {"id":"c1","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    yield b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":9}}\n\n'
    yield b"data: [DONE]\n\n"


class FakeOpenAI(ThreadingHTTPServer):
    """A tiny local server speaking the OpenAI chat-completions streaming format (SSE)."""

    def __init__(self, delay: float = 0.0, status: int = 200) -> None:
        self.delay = delay
        self.status = status
        self.requests: list[tuple[dict, dict]] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((dict(self.headers), body))
        if self.path != "/v1/chat/completions" or self.server.status != 200:
            self.send_response(self.server.status if self.server.status != 200 else 404)
            self.end_headers()
            self.wfile.write(b'{"error":{"message":"invalid api key"}}')
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for event in sse_events(MODEL_TEXT):
            self.wfile.write(event)
            self.wfile.flush()
            time.sleep(self.server.delay)


def test_parse_sse_follows_the_format() -> None:
    lines = [
        b": comment\n",
        b"event: message\n",
        b'data: {"choices":[{"delta":{"content":"Hel"}}]}\n',
        b"\n",
        b'data: {"choices":[{"delta":\n',
        b'data: {"content":"lo"}}]}\r\n',
        b"\r\n",
        b'data: {"choices":[]}\n',
        b"\n",
        b"data: [DONE]\n",
        b"\n",
        b'data: {"choices":[{"delta":{"content":"after done"}}]}\n',
    ]
    assert list(oa.parse_sse(lines)) == ["Hel", "lo"]
    with pytest.raises(oa.ChatError, match="quota"):
        list(oa.parse_sse([b'data: {"error":{"message":"quota exceeded"}}\n', b"\n"]))
    with pytest.raises(oa.ChatError, match="malformed"):
        list(oa.parse_sse([b"data: {not json\n", b"\n"]))


async def test_stream_chat_yields_tokens_as_they_arrive() -> None:
    server = FakeOpenAI(delay=0.05)
    try:
        t0 = time.perf_counter()
        got: list[tuple[float, str]] = []
        msgs = [{"role": "user", "content": "Where is Alice?"}]
        async for piece in oa.stream_chat(server.url, "sk-test", "tiny-model", msgs):
            got.append((time.perf_counter() - t0, piece))
    finally:
        server.close()
    assert "".join(p for _, p in got) == MODEL_TEXT
    assert got[0][0] < got[-1][0] / 2  # streamed, not buffered until the end
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "tiny-model" and body["stream"] is True and body["messages"] == msgs


async def test_stream_chat_reports_http_and_connection_errors() -> None:
    server = FakeOpenAI(status=401)
    try:
        with pytest.raises(oa.ChatError, match=r"HTTP 401.*invalid api key"):
            async for _ in oa.stream_chat(server.url, "bad", "m", [{"role": "user", "content": "hi"}]):
                pass
    finally:
        server.close()
    with pytest.raises(oa.ChatError, match="cannot reach"):
        async for _ in oa.stream_chat("http://127.0.0.1:9/v1", "", "m", [], timeout=2):
            pass


async def test_openai_agent_streams_the_answer_through_say_stream(hub: Hub) -> None:
    server = FakeOpenAI(delay=0.02)
    pub = Publisher(hub.endpoints)
    says = Subscriber(hub.endpoints, ["say/"])
    await asyncio.sleep(0.3)  # let the publisher connect before the first event
    await pub.publish(Presence(room="garden", person="Alice", state="entered", time=time.time()))
    try:
        async with Client(hub.endpoints, name="oa-test") as client:
            assert await client.wait_connected(5)
            await _wait_presence(client, 1)
            agent = oa.OpenAIAgent(client, server.url, "k", "tiny-model")
            ev = Transcript(room="kitchen", text="Where is Alice?", final=True, speaker="Bob")
            task = asyncio.create_task(agent.handle(ev))
            pieces: list[Say] = []
            while not pieces or pieces[-1].more:
                pieces.append(await _next_say(says))
            answer_id = await asyncio.wait_for(task, 5)
            # A barge-in: the history keeps only what was heard.
            await agent.handle(
                PlaybackStatus(room="kitchen", answer_id=answer_id, state="stopped", played_text="It is sunny.")
            )
    finally:
        server.close()
        pub.close()
        says.close()
    assert len(pieces) > 5 and all(p.room == "kitchen" and p.answer_id == answer_id for p in pieces)
    assert "".join(p.text for p in pieces) == MODEL_TEXT
    system = server.requests[0][1]["messages"][0]["content"]
    assert "Alice in the garden" in system and "Bob" in system
    assert agent.history["kitchen"][-1]["content"].startswith("It is sunny.")


def test_example_needs_a_model_name(monkeypatch, capsys) -> None:
    monkeypatch.delenv("SENSORIUM_MODEL", raising=False)
    with pytest.raises(SystemExit) as exc:
        oa.parse_args([])
    assert exc.value.code == 2 and "SENSORIUM_MODEL" in capsys.readouterr().err
    monkeypatch.setenv("SENSORIUM_MODEL", "qwen2.5")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://llm:8000/v1")
    args = oa.parse_args(["--hub", "tcp://hub:5550"])
    assert (args.model, args.base_url, args.hub) == ("qwen2.5", "http://llm:8000/v1", "tcp://hub:5550")


# ------------------------------------------------------------------------------ the whole loop


@pytest.mark.slow
async def test_spoken_question_is_answered_aloud_in_its_room(tmp_path) -> None:
    """Edge mic (a WAV) → wake → arbiter → stt → built-in agent → tts → edge player WAV → whisper hears it."""
    import media

    from sensorium.apps.agent import Turn, run_builtin_agent
    from sensorium.deployment import deployment_from_dict
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded
    from sensorium.models.stt import Transcriber

    question = media.concat(1.0, media.speech("hey jarvis", "flite:rms"), 0.3, media.speech("who is home", "flite:rms"))
    wav = media.write_wav(tmp_path / "kitchen.wav", media.concat(question, 4.0))
    out = tmp_path / "tts"
    dep = deployment_from_dict(
        {
            "data_dir": str(tmp_path / "data"),
            "hub": {"heartbeat": "250ms"},
            "rooms": {"kitchen": {}},
            "edges": {
                "kitchen-pi": {
                    "room": "kitchen",
                    "microphone": {"file": str(wav)},
                    "playback": {"wav_dir": str(out), "rate": 22050},
                }
            },
            "workers": {"local": {"stages": ["wake", "arbiter", "stt", "tts"]}},
            # Piper without voice noise: what whisper reads back is not a random draw
            "stages": {"tts": {"backend": "piper", "voice_noise": False}},
        }
    )
    turns: list[Turn] = []
    async with embedded(dep) as env:
        pub = Publisher(env.endpoints)
        await asyncio.sleep(0.3)
        await pub.publish(Presence(room="office", person="Alice", state="entered", time=env.clock.now()))
        agent = asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock, turns=turns))
        await asyncio.sleep(0.5)
        edge = EdgeAgent(dep, "kitchen-pi", hub_address=env.address, clock=env.clock)
        edge_task = asyncio.create_task(edge.run())
        async with asyncio.timeout(60):
            while not list(out.glob("*.wav")) or not turns:
                await asyncio.sleep(0.2)
            await asyncio.sleep(4.0)  # the answer plays in real time into its WAV
        edge.stop()
        agent.cancel()
        await asyncio.gather(edge_task, agent, return_exceptions=True)
        pub.close()
    assert [(t.room, t.answer) for t in turns] == [("kitchen", "Alice is in the office.")]
    [answer_wav] = out.glob("kitchen_*.wav")
    pcm, rate = media.read_wav(answer_wav)
    heard = Transcriber("tiny.en").transcribe(media.resample(pcm, rate), word_timestamps=False).text.lower()
    print("whisper heard:", heard)
    assert "alice" in heard and "office" in heard, heard


class RoomMic:
    """A room's microphone stream as its edge sends it, in real time: silence plus sounds mixed in at hub times
    (what people say, and what the room's own loudspeaker plays)."""

    def __init__(self, pub: Publisher, clock, room: str, node: str) -> None:
        self.pub, self.clock, self.room, self.node = pub, clock, room, node
        self.sounds: list[tuple[float, np.ndarray]] = []
        self.t = 0.0

    def add(self, at: float, pcm: np.ndarray) -> None:
        self.sounds.append((at, pcm.astype(np.float64)))

    async def run(self) -> None:
        block, rate = 1280, 16000
        self.t = self.clock.now()
        loop = asyncio.get_running_loop()
        start, sent = loop.time(), 0.0
        while True:
            out = np.zeros(block)
            for at, pcm in self.sounds:
                a = int(round((self.t - at) * rate))  # offset of this block inside the sound
                if a + block <= 0 or a >= len(pcm):
                    continue
                lo, hi = max(a, 0), min(a + block, len(pcm))
                out[lo - a : hi - a] += pcm[lo:hi]
            data = np.clip(out, -32768, 32767).astype("<i2").tobytes()
            await self.pub.publish(AudioChunk(time=self.t, room=self.room, source=self.node, rate=rate, data=data))
            self.t += block / rate
            sent += block / rate
            await asyncio.sleep(max(0.0, start + sent - loop.time()))


@pytest.mark.slow
async def test_a_reply_that_asks_back_hears_the_next_command_without_a_wake_word(tmp_path) -> None:
    """ "hey jarvis, hello" → "Hello! How can I help?" plays in the room, and the microphone hears it; only after
    the edge reports it played does the room listen without a wake word: "what time is it" is answered, and the
    reply's own sound is never transcribed."""
    import media

    from sensorium.apps.agent import Turn, run_builtin_agent
    from sensorium.deployment import deployment_from_dict
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded

    reply = "Hello! How can I help?"
    heard_reply = media.speech(reply, "piper:joe")  # sensorium's own voice, as the room's microphone hears it
    dep = deployment_from_dict(
        {
            "data_dir": str(tmp_path / "data"),
            "hub": {"heartbeat": "250ms"},
            "rooms": {"kitchen": {}},
            "edges": {"kitchen-pi": {"room": "kitchen", "playback": {"wav_dir": str(tmp_path / "tts"), "rate": 22050}}},
            "workers": {"local": {"stages": ["wake", "arbiter", "stt", "tts"]}},
            "stages": {"tts": {"backend": "piper"}},
        }
    )
    turns: list[Turn] = []
    finals: list[Transcript] = []
    async with embedded(dep) as env:
        pub = Publisher(env.endpoints)
        mic = RoomMic(pub, env.clock, "kitchen", "kitchen-pi")
        edge = EdgeAgent(dep, "kitchen-pi", hub_address=env.address, clock=env.clock)
        tasks = [
            asyncio.create_task(mic.run()),
            asyncio.create_task(edge.run()),
            asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock, turns=turns)),
        ]
        await asyncio.sleep(1.0)
        hello = media.concat(media.speech("hey jarvis", "flite:rms"), 0.3, media.speech("hello", "flite:rms"))
        mic.add(mic.t + 0.5, hello)
        async with Client(env.endpoints, clock=env.clock) as c:
            async with asyncio.timeout(120):
                async for ev in c.events(["playback", "transcript"], rooms=["kitchen"]):
                    if isinstance(ev, Transcript) and ev.final:
                        finals.append(ev)
                    if isinstance(ev, PlaybackStatus) and ev.state == "started" and len(turns) == 1:
                        mic.add(ev.time + 0.005, heard_reply)  # the loudspeaker, a few ms away in the room
                    if isinstance(ev, PlaybackStatus) and ev.state == "ended" and len(turns) == 1:
                        mic.add(max(mic.t, ev.time) + 0.8, media.speech("what time is it", "flite:rms"))
                    if len(turns) == 2:
                        break
        for t in tasks:
            t.cancel()
        edge.stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        pub.close()
    print("finals:", [(f.text, f.request_id) for f in finals])
    assert [t.answer for t in turns][:1] == [reply]
    assert "time" in turns[1].question.lower() and turns[1].answer.startswith("It is"), turns
    assert finals[-1].request_id.startswith("follow-")  # heard without a wake word, on the claim after playback
    assert not any("help" in f.text.lower() for f in finals)  # the reply's own sound was not transcribed
