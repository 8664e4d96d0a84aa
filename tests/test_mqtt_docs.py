"""docs/home-assistant.md stays true for the MQTT bridge: its config loads, its automation is the one the
Home Assistant test runs, its commands parse, its entity table is what discovery gives."""

from __future__ import annotations

import re
import shlex
import sys
import textwrap
import tomllib
from pathlib import Path

import yaml

from sensorium.cli import build_parser
from sensorium.deployment import deployment_from_dict

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "home-assistant.md").read_text()
SECTION = DOC[DOC.index("## Presence over MQTT") :].split("\n## ", 1)[0]  # up to the next section
# blocks inside list items are indented: dedent them
BLOCKS = [(lang, textwrap.dedent(body)) for lang, body in re.findall(r"```(\w*)\n(.*?)```", SECTION, flags=re.S)]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def acl_block() -> str:
    """The ACL file the guide shows (also what tests/test_mqtt_bridge.py gives its broker)."""
    body = next(b for lang, b in BLOCKS if b.startswith("# /etc/mosquitto/acl"))
    return body.split("\n", 1)[1]


def test_the_mqtt_table_loads_into_a_deployment() -> None:
    block = next(tomllib.loads(b) for lang, b in BLOCKS if lang == "toml")
    raw = tomllib.loads((REPO / "examples/deploy-phase0.toml").read_text()) | block
    dep = deployment_from_dict(raw, "docs/home-assistant.md")
    assert dep.mqtt is not None and dep.mqtt.password_file == "/etc/sensorium/mqtt-password"


def test_the_sample_automation_is_the_one_home_assistant_runs_in_the_tests() -> None:
    from benchmarks.mqtt import HA_CONFIG

    first = next(yaml.safe_load(b) for lang, b in BLOCKS if lang == "yaml")
    assert first == yaml.safe_load(HA_CONFIG)


def test_commands_parse() -> None:
    lines = [ln for lang, b in BLOCKS if lang == "sh" for ln in b.splitlines() if ln.startswith("sensorium ")]
    assert len(lines) >= 2
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.command == "mqtt"


def test_the_entity_table_is_what_discovery_gives() -> None:
    from benchmarks.mqtt import entities

    table = set(re.findall(r"^\| `((?:binary_sensor|sensor|event|device_tracker)\.[a-z_]+)`", SECTION, flags=re.M))
    assert table == set(entities(["kitchen"], ["alice"])) | {"event.kitchen_voice"}
