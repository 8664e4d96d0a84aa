#!/usr/bin/env python3
"""Example LLM agent that reaches the house through sensorium's MCP server instead of the Python client.

It connects to ``sensorium mcp`` (streamable HTTP) with the official MCP SDK, offers every tool the
server lists (who_is_home, where_is, room_occupants, last_seen, recent_transcripts, say, ask, stop)
to any OpenAI-compatible chat endpoint as function tools, and runs the model's tool calls until it
answers. The same loop works with llama.cpp's server, vLLM, Ollama, LiteLLM or OpenAI:

    sensorium mcp --config deploy.toml &                       # http://127.0.0.1:8765/mcp
    OPENAI_BASE_URL=http://localhost:11434/v1 SENSORIUM_MODEL=llama3.2 \\
        python examples/mcp_agent.py "Is anyone in the kitchen? If Joe is home, ask him whether he wants pasta."

Off loopback the server wants its bearer token: ``--token-file`` (the file ``[mcp] token_file`` names).
The agent needs only the ``mcp`` package (no sensorium import), so it runs on any machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

SYSTEM = (
    "You are the assistant of a home. Use the tools to find out who is where, what was said, to speak in a "
    "room or to ask a person something. Answer briefly."
)


class ChatError(RuntimeError):
    """The chat endpoint refused the request or could not be reached."""


def openai_tools(tools: list[Any]) -> list[dict[str, Any]]:
    """MCP tool definitions → the chat API's function tools (the input schema is already JSON Schema)."""
    return [
        {
            "type": "function",
            "function": {"name": t.name, "description": t.description or "", "parameters": t.inputSchema},
        }
        for t in tools
    ]


def _chat(base_url: str, api_key: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    req = urllib.request.Request(
        base_url.rstrip("/") + "/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        raise ChatError(f"{req.full_url}: HTTP {exc.code} {exc.read()[:300].decode(errors='replace')}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ChatError(f"{req.full_url}: {exc}") from None


def tool_result_text(result: Any) -> str:
    """What the model reads back: the structured result as JSON, or the text (an error's message)."""
    if result.structuredContent is not None and not result.isError:
        return json.dumps(result.structuredContent)
    text = " ".join(getattr(c, "text", "") for c in result.content)
    return f"error: {text}" if result.isError else text


async def run(
    question: str,
    *,
    url: str,
    model: str,
    base_url: str,
    api_key: str = "none",
    token: str = "",
    max_rounds: int = 8,
    timeout: float = 120.0,
) -> str:
    """Answer ``question`` with the model, calling sensorium's tools for it; returns the model's answer."""
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with streamablehttp_client(url, headers=headers) as (read, write, _), ClientSession(read, write) as mcp:
        await mcp.initialize()
        tools = openai_tools((await mcp.list_tools()).tools)
        messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        for _ in range(max_rounds):
            body = {"model": model, "messages": messages, "tools": tools}
            reply = await asyncio.to_thread(_chat, base_url, api_key, body, timeout)
            message = reply["choices"][0]["message"]
            calls = message.get("tool_calls") or []
            if not calls:
                return str(message.get("content") or "")
            messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
            for call in calls:
                fn = call["function"]
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError as exc:
                    text = f"error: the arguments are not JSON ({exc})"
                else:
                    text = tool_result_text(await mcp.call_tool(fn["name"], args))
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": text})
        raise ChatError(f"no answer after {max_rounds} rounds of tool calls")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("question", help="what to ask the agent")
    p.add_argument("--url", default="http://127.0.0.1:8765/mcp", help="sensorium's MCP endpoint")
    p.add_argument("--token-file", help="file with the server's bearer token (needed off loopback)")
    p.add_argument("--model", default=os.environ.get("SENSORIUM_MODEL", ""), help="model name (SENSORIUM_MODEL)")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:11434/v1"))
    args = p.parse_args(argv)
    if not args.model:
        print("mcp_agent: name the model with --model or SENSORIUM_MODEL", file=sys.stderr)
        return 2
    token = Path(args.token_file).read_text().splitlines()[0].strip() if args.token_file else ""
    try:
        answer = asyncio.run(
            run(args.question, url=args.url, model=args.model, base_url=args.base_url,
                api_key=os.environ.get("OPENAI_API_KEY", "none"), token=token)
        )  # fmt: skip
    except ChatError as exc:
        print(f"mcp_agent: {exc}", file=sys.stderr)
        return 1
    print(answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
