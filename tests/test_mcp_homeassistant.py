"""Home Assistant 2025.4.4's MCP integration pointed at ``sensorium mcp`` through its config flow.

Real Home Assistant core (``.venv-homeassistant``, mcp 1.5.0: SSE only) adds the ``mcp`` integration
with sensorium's SSE URL through the config-flow REST API; the integration registers an LLM API
named after the server whose tools are sensorium's. What HA's conversation agents get from that API is
read back through HA's own MCP server integration (``mcp_server``, which serves one LLM API to MCP
clients): it lists sensorium's tools, and a call goes HA → sensorium and answers from the session.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from mcp import ClientSession
from mcp.client.sse import sse_client
from test_mcp_server import SPEAK_TOOLS, STATE_TOOLS, WHERE, play_session, serving

from sensorium.pipeline.bus import Publisher
from sensorium.pipeline.hub import Hub

pytestmark = pytest.mark.slow


async def test_home_assistant_mcp_integration_lists_and_calls_sensorium_tools(home_assistant: Any, hub: Hub) -> None:
    ha = home_assistant
    pub = Publisher(hub.endpoints)
    await asyncio.sleep(0.2)
    await play_session(hub, pub)
    async with serving(hub) as (server, url):
        entry = await ha.add_integration("mcp", {"url": f"{url}/sse"})
        assert entry["title"] == "sensorium-mcp"
        api_id = f"mcp-{entry['entry_id']}"

        # the LLM APIs a conversation agent (or HA's MCP server) can be given: sensorium's is one of them
        form = await ha.request("POST", "/api/config/config_entries/flow", {"handler": "mcp_server"})
        [field] = [f for f in form["data_schema"] if f["name"] == "llm_hass_api"]
        options = {o["value"]: o["label"] for o in field["selector"]["select"]["options"]}
        assert options.get(api_id) == "sensorium-mcp", options
        done = await ha.request("POST", f"/api/config/config_entries/flow/{form['flow_id']}", {"llm_hass_api": api_id})
        assert done["type"] == "create_entry", done

        headers = {"Authorization": f"Bearer {ha.token}"}
        async with (
            sse_client(f"{ha.url}/mcp_server/sse", headers=headers) as (read, write),
            ClientSession(read, write) as s,
        ):
            await s.initialize()
            tools = {t.name: t for t in (await s.list_tools()).tools}
            assert set(tools) == STATE_TOOLS | SPEAK_TOOLS, tools
            assert tools["where_is"].description and "room" in tools["where_is"].description
            before = server.calls
            r = await s.call_tool("where_is", {"person": "sara"})
            text = " ".join(getattr(c, "text", "") for c in r.content)
            assert not r.isError, text
            assert '"living_room"' in text, text
            assert server.calls == before + 1  # HA called sensorium for it
            r = await s.call_tool("who_is_home", {})
            text = " ".join(getattr(c, "text", "") for c in r.content)
            people = {p["person"]: p["room"] for p in _first_json(text)["people"]}
            assert people == WHERE
    pub.close()


def _first_json(text: str) -> dict[str, Any]:
    """HA wraps the MCP result it got in its own JSON; the tool's own JSON is inside as text."""
    outer = json.loads(text)
    stack: list[Any] = [outer]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if "people" in item:
                return item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and item.startswith("{"):
            stack.append(json.loads(item))
    raise AssertionError(f"no who_is_home result in {text[:300]}")
