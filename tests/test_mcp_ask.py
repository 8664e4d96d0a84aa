"""``ask`` through the real pipeline: the question is synthesized (tts) and played by the room's edge,
the person's synthesized spoken answer reaches the room's microphone stream afterwards, speech-to-text
and speaker ID (enrolled voices) turn it into the answer the MCP client gets, over streamable HTTP.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from sensorium.evaluation.mcp_house import answer_after_the_question, house, prepare_voices

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def voices(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return prepare_voices(tmp_path_factory.mktemp("gallery"))


async def test_ask_gets_the_spoken_answer_and_who_gave_it(tmp_path: Path, voices: dict[str, Any]) -> None:
    async with house(tmp_path, voices["gallery"]) as (env, mic, url):
        async with (
            streamablehttp_client(url) as (read, write, _),
            ClientSession(read, write, read_timeout_seconds=timedelta(seconds=90)) as s,
        ):
            await s.initialize()
            answering = asyncio.create_task(answer_after_the_question(env, mic, voices["joe"]))
            r = await s.call_tool("ask", {"person": "joe", "question": "Would you like pasta for dinner?"})
            await answering
            got = r.structuredContent
            assert not r.isError and got is not None, r.content
            print("ask joe:", got)
            assert (got["status"], got["speaker"], got["room"]) == ("answered", "joe", "kitchen"), got
            assert "pasta" in got["answer"].lower(), got

            answering = asyncio.create_task(answer_after_the_question(env, mic, voices["rob"]))
            r = await s.call_tool("ask", {"person": "joe", "question": "Are you still there?"})
            await answering
            got = r.structuredContent
            print("ask joe, rob answers:", got)
            assert got is not None and (got["status"], got["speaker"]) == ("someone_else", "rob"), got
            assert "walk" in got["answer"].lower(), got

            r = await s.call_tool("ask", {"person": "joe", "question": "Hello?", "timeout": 8})
            got = r.structuredContent
            assert got is not None and (got["status"], got["answer"]) == ("no_answer", ""), got

            r = await s.call_tool("ask", {"person": "sara", "question": "Hello?"})
            got = r.structuredContent
            assert got is not None and (got["status"], got["room"]) == ("not_home", None), got
