#!/usr/bin/env python3
"""Example reasoning loop: answer spoken questions through any OpenAI-compatible chat endpoint.

Works with llama.cpp's server, vLLM, Ollama, LiteLLM or OpenAI itself: it streams the model's
tokens straight into ``Client.say_stream``, so the TTS stage speaks the first sentence while the
model is still writing the rest. The system prompt tells the model the time and who is where (the
hub's presence snapshot). When a barge-in cuts an answer off, the history keeps only what was heard.

    OPENAI_BASE_URL=http://localhost:11434/v1 SENSORIUM_MODEL=llama3.2 \\
        python examples/openai_agent.py --hub tcp://hub.local:5550

Only the standard library is used for HTTP (no extra dependency on the agent's container).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from sensorium.pipeline.messages import PlaybackStatus, Presence, Transcript

log = logging.getLogger("openai_agent")

SYSTEM = (
    "You are {name}, the voice of a home assistant. You are heard, not read: answer in one to three short "
    "spoken sentences, no lists, no markdown, no emoji. Now: {now}. The person asking is {speaker}, in the "
    "{room}. Who is home: {presence}."
)


class ChatError(RuntimeError):
    """The chat endpoint refused the request or could not be reached."""


def parse_sse(lines: Iterable[bytes]) -> Iterator[str]:
    """Content deltas from an OpenAI chat-completions SSE stream (``data: {...}`` events, ``[DONE]``).

    Follows the SSE rules: ``:`` lines are comments (keep-alives), an event's ``data`` lines are joined
    with newlines and the event ends at a blank line. Chunks without content (the role chunk, a
    usage chunk with empty ``choices``) yield nothing; an ``error`` object raises ``ChatError``.
    """
    data: list[str] = []
    for raw in itertools.chain(lines, [b""]):  # a final blank line ends an event the server did not terminate
        line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
        if line.startswith(":"):
            continue
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line or not data:
            continue  # other fields (event:, id:, retry:) carry nothing we need
        payload = "\n".join(data)
        data.clear()
        if payload.strip() == "[DONE]":
            return
        try:
            obj = json.loads(payload)
        except json.JSONDecodeError as exc:
            raise ChatError(f"endpoint sent malformed JSON in its stream: {payload[:80]!r}") from exc
        if "error" in obj:
            err = obj["error"]
            raise ChatError(f"endpoint error: {err.get('message', err) if isinstance(err, dict) else err}")
        for choice in obj.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                yield piece


def _request(base_url: str, api_key: str, body: dict[str, Any], timeout: float) -> urllib.request.Request:
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    url = base_url.rstrip("/") + "/chat/completions"
    return urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers, method="POST")


async def stream_chat(
    base_url: str, api_key: str, model: str, messages: list[dict[str, str]], timeout: float = 30.0
) -> AsyncIterator[str]:
    """Yield the model's text as it streams (the blocking HTTP read runs on a thread)."""
    body = {"model": model, "messages": messages, "stream": True, "temperature": 0.3}
    req = _request(base_url, api_key, body, timeout)
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    cancelled = threading.Event()

    def fail(exc: ChatError) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    def reader() -> None:
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                for piece in parse_sse(resp):
                    if cancelled.is_set():
                        return
                    loop.call_soon_threadsafe(queue.put_nowait, ("piece", piece))
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:200]
            loop.call_soon_threadsafe(
                queue.put_nowait, ("error", ChatError(f"HTTP {exc.code} from {req.full_url}: {detail}"))
            )
        except (urllib.error.URLError, OSError) as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", ChatError(f"cannot reach {req.full_url}: {exc}")))
        except ChatError as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    thread = threading.Thread(target=reader, name="chat-stream", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "piece":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        cancelled.set()


def describe_presence(presence: list[Presence]) -> str:
    """ "Alice in the kitchen, 1 unknown person in the hall" from a presence snapshot."""
    parts = [f"{p.person} in the {p.room}" for p in presence if p.person not in ("", "unknown") and p.state != "left"]
    parts += [f"{p.unknown} unknown person(s) in the {p.room}" for p in presence if p.person == "unknown" and p.unknown]
    return ", ".join(parts) or "nobody seen"


class OpenAIAgent:
    """Answers final transcripts with a streamed chat completion, one history per room."""

    def __init__(self, client: Any, base_url: str, api_key: str, model: str, name: str = "Jarvis") -> None:
        self.client = client
        self.base_url = base_url
        self.api_key = api_key
        self.model = model
        self.name = name
        self.history: dict[str, list[dict[str, str]]] = {}
        self._answers: dict[str, tuple[str, int]] = {}

    async def handle(self, ev: Any) -> str | None:
        """Answer one event; returns the answer id (None when nothing was said)."""
        if isinstance(ev, PlaybackStatus) and ev.state == "stopped" and ev.answer_id in self._answers:
            room, idx = self._answers.pop(ev.answer_id)
            hist = self.history.get(room, [])
            if idx < len(hist):  # keep only what the person heard
                hist[idx]["content"] = (ev.played_text + " …(interrupted)").strip()
            return None
        if not isinstance(ev, Transcript) or not ev.final or not ev.text.strip() or ev.request_id:
            return None  # request_id: Home Assistant asked for this transcript and answers it itself
        try:
            presence = await self.client.snapshot()
        except Exception as exc:
            log.warning("no presence snapshot: %s", exc)
            presence = []
        system = SYSTEM.format(
            name=self.name,
            now=dt.datetime.now().strftime("%A %d %B %Y, %H:%M"),
            speaker=ev.speaker if ev.speaker and ev.speaker != "unknown" else "someone not enrolled",
            room=ev.room.replace("_", " "),
            presence=describe_presence(presence),
        )
        hist = self.history.setdefault(ev.room, [])
        hist.append({"role": "user", "content": ev.text})
        del hist[:-12]
        heard: list[str] = []

        messages = [{"role": "system", "content": system}, *hist]

        async def pieces() -> AsyncIterator[str]:
            try:
                async for piece in stream_chat(self.base_url, self.api_key, self.model, messages):
                    heard.append(piece)
                    yield piece
            except ChatError as exc:
                log.error("%s", exc)
                yield "Sorry, I can't reach my language model right now."

        answer_id = await self.client.answer_stream(ev, pieces())  # to the room, or back to the asker
        hist.append({"role": "assistant", "content": "".join(heard)})
        self._answers[answer_id] = (ev.room, len(hist) - 1)
        print(
            f"[{ev.room}] {ev.speaker or 'someone'}: {ev.text}\n[{ev.room}] {self.name}: {''.join(heard)}", flush=True
        )
        return answer_id


async def main(args: argparse.Namespace) -> int:
    from sensorium import Client

    async with Client(args.hub, name="openai-agent") as client:
        if not await client.wait_connected(10):
            print(f"openai_agent: hub at {args.hub} is not answering", file=sys.stderr)
            return 1
        agent = OpenAIAgent(client, args.base_url, args.api_key, args.model, name=args.name)
        print(f"answering through {args.base_url} ({args.model}); hub {args.hub}", flush=True)
        async for ev in client.events(["transcript", "playback"], rooms=args.room):
            await agent.handle(ev)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hub", default=os.environ.get("SENSORIUM_HUB", "ipc:///tmp/sensorium"), help="hub address")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:11434/v1"))
    p.add_argument("--model", default=os.environ.get("SENSORIUM_MODEL", ""), help="model name (env SENSORIUM_MODEL)")
    p.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY", ""), help="key (env OPENAI_API_KEY)")
    p.add_argument("--name", default="Jarvis", help="what the assistant calls itself")
    p.add_argument("--room", action="append", default=None, help="only answer in this room (repeatable)")
    args = p.parse_args(argv)
    if not args.model:
        p.error("give --model or set SENSORIUM_MODEL")
    return args


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        sys.exit(asyncio.run(main(parse_args())))
    except KeyboardInterrupt:
        sys.exit(130)
