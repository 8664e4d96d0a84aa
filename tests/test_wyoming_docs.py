"""docs/home-assistant.md stays true: its config loads, its commands parse, the files it names exist,
and the example deployments' [wyoming] tables are valid."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sensorium.cli import build_parser
from sensorium.deployment import deployment_from_dict, load_deployment

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "home-assistant.md").read_text()
# the Wyoming section's blocks (the guide's MQTT section has its own test, tests/test_mqtt_docs.py)
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", DOC[DOC.index("## Voice (Wyoming)") :], flags=re.S)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def test_the_wyoming_table_in_the_guide_is_a_valid_deployment() -> None:
    [snippet] = [tomllib.loads(body) for lang, body in BLOCKS if lang == "toml"]
    raw = merge(tomllib.loads((REPO / "examples/deploy-phase0.toml").read_text()), snippet)
    dep = deployment_from_dict(raw, "docs/home-assistant.md")
    assert dep.wyoming is not None
    assert set(dep.wyoming.satellites) == set(dep.rooms) and dep.wyoming.room in dep.rooms
    assert dep.wyoming.ports() == {"wake": 10400, "stt": 10300, "tts": 10200, "handle": 10500}


@pytest.mark.parametrize("name", ["deploy-phase0.toml", "deploy-4gpu.toml"])
def test_the_example_deployments_configure_the_gateway(name: str) -> None:
    dep = load_deployment(REPO / "examples" / name)
    assert dep.wyoming is not None and set(dep.wyoming.satellites) == {"kitchen", "living_room", "bedroom"}


def test_the_guides_commands_parse_and_its_files_exist() -> None:
    lines = [
        " ".join(line.split())
        for lang, body in BLOCKS
        if lang == "sh"
        for line in body.replace("\\\n", " ").splitlines()
        if re.search(r"(^|/)sensorium \w", line)
    ]
    assert any(" wyoming " in f" {line} " for line in lines)
    parser = build_parser()
    for line in lines:
        argv = shlex.split(line)
        at = next(i for i, a in enumerate(argv) if a.split("/")[-1] == "sensorium" and argv[i - 1] != "-u")
        argv = argv[at + 1 :]
        parser.parse_args(argv)  # exits (fails the test) on an unknown command or option
    for path in re.findall(r"`((?:deploy|docs|examples|benchmarks|bridges|tests)/[\w./-]+)`", DOC):
        assert (REPO / path).exists(), path
