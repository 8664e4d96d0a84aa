"""docs/mcp.md stays true: its [mcp] table loads, its commands parse, its tool table is the server's."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from sensorium.bridges.mcp.server import SensoriumMcp
from sensorium.cli import build_parser
from sensorium.deployment import deployment_from_dict
from sensorium.pipeline.config import McpConfig

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "mcp.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", DOC, flags=re.S)


def test_the_mcp_table_in_the_guide_is_a_valid_deployment() -> None:
    [snippet] = [tomllib.loads(body) for lang, body in BLOCKS if lang == "toml"]
    raw = tomllib.loads((REPO / "examples/deploy-phase0.toml").read_text()) | snippet
    dep = deployment_from_dict(raw, "docs/mcp.md")
    assert dep.mcp is not None and (dep.mcp.host, dep.mcp.port, dep.mcp.speak) == ("127.0.0.1", 8765, True)


def test_the_guides_commands_parse() -> None:
    parser = build_parser()
    lines = [ln.split("#")[0].strip() for lang, body in BLOCKS if lang == "sh" for ln in body.splitlines()]
    commands = [shlex.split(ln)[1:] for ln in lines if ln.startswith("sensorium ")]
    assert len(commands) == 2
    for argv in commands:
        assert parser.parse_args(argv).command == "mcp"


def test_the_tool_table_lists_the_servers_tools() -> None:
    documented = set(re.findall(r"^\| `(\w+)` \|", DOC[DOC.index("## Tools") : DOC.index("## Resources")], re.M))
    server = SensoriumMcp(McpConfig(), ["kitchen"], "ipc:///tmp/unused")
    tools = {t.name for t in server.mcp._tool_manager.list_tools()}
    assert documented - {"status", "answered", "someone_else", "no_answer", "not_home"} == tools
