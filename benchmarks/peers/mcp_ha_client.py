"""Home Assistant 2025.4.4's MCP client (``mcp==1.5.0`` over SSE) timing tool calls against ``sensorium mcp``.

Runs under ``.venv-homeassistant/bin/python`` (Home Assistant's own pins), never in the project's venv:

    .venv-homeassistant/bin/python benchmarks/peers/mcp_ha_client.py --url http://127.0.0.1:P/sse \
        --calls '{"who_is_home": {}}' -n 200

Prints one JSON object: tool → the client's wall time per call in seconds (after 5 warm-up calls).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any


async def main(url: str, calls: dict[str, dict[str, Any]], n: int) -> dict[str, list[float]]:
    from mcp import ClientSession
    from mcp.client.sse import sse_client

    out: dict[str, list[float]] = {}
    async with sse_client(url) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        for tool, args in calls.items():
            times = []
            for i in range(n + 5):
                t0 = time.perf_counter()
                r = await s.call_tool(tool, args)
                dt = time.perf_counter() - t0
                if r.isError:
                    raise SystemExit(f"{tool}: {r.content}")
                if i >= 5:
                    times.append(dt)
            out[tool] = times
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="the server's SSE endpoint, http://host:port/sse")
    ap.add_argument("--calls", required=True, help="JSON: tool name → arguments")
    ap.add_argument("-n", type=int, default=200, help="timed calls per tool")
    a = ap.parse_args()
    print(json.dumps(asyncio.run(main(a.url, json.loads(a.calls), a.n))))
