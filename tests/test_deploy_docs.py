"""docs/deploy.md stays true: its config snippets load, its commands parse, its files exist.

Every ```toml block is validated with the real loader and stage registry: a block with a ``[hub]``
table on its own, a partial block (e.g. one worker) merged into examples/deploy-phase0.toml. Every
``sensorium …`` command line in the guide is parsed by the real CLI parser, every installer flag it
mentions exists, and every repository path it names is there.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sensorium.cli import build_parser
from sensorium.deployment import deployment_from_dict

REPO = Path(__file__).resolve().parents[1]
DOC = (REPO / "docs" / "deploy.md").read_text()
BLOCKS = re.findall(r"```(\w*)\n(.*?)```", DOC, flags=re.S)


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def commands() -> list[str]:
    """Every ``sensorium COMMAND …`` invocation in code blocks and inline code."""
    found = []
    texts = [body.replace("\\\n", " ") for lang, body in BLOCKS if lang in ("sh", "")]
    texts += re.findall(r"`([^`\n]*sensorium [a-z-]+[^`\n]*)`", DOC)
    for text in texts:
        for line in text.splitlines():
            m = re.search(
                r"(?:^|[\s/])sensorium ((?:keys|doctor|events|top|hub|worker|edge|soak|placement)\b[^#|]*)", line
            )
            if m and "…" not in m.group(1) and " " in m.group(1).strip():  # a bare name is prose
                found.append(" ".join(m.group(1).split()))
    return found


def test_the_guide_has_config_snippets_and_commands() -> None:
    assert sum(lang == "toml" for lang, _ in BLOCKS) >= 3
    assert len(commands()) >= 10


@pytest.mark.parametrize("index", [i for i, (lang, _) in enumerate(BLOCKS) if lang == "toml"])
def test_toml_snippets_are_valid_deployments(index: int) -> None:
    snippet = tomllib.loads(BLOCKS[index][1])
    if "hub" in snippet:
        raw = snippet
    else:
        raw = merge(tomllib.loads((REPO / "examples/deploy-phase0.toml").read_text()), snippet)
    dep = deployment_from_dict(raw, f"docs/deploy.md toml block {index}")
    assert set(dep.rooms) == {"kitchen", "living_room", "bedroom"}


def test_four_gpu_snippet_is_the_example_file() -> None:
    """The guide's four-GPU placement is exactly examples/deploy-4gpu.toml's."""
    four = tomllib.loads((REPO / "examples/deploy-4gpu.toml").read_text())["workers"]
    snippet = next(tomllib.loads(b) for lang, b in BLOCKS if lang == "toml" and "[workers.gpu3]" in b)["workers"]
    assert snippet == four


@pytest.mark.parametrize("line", commands())
def test_sensorium_commands_in_the_guide_parse(line: str) -> None:
    try:
        build_parser().parse_args(shlex.split(line))
    except SystemExit as exc:
        pytest.fail(f"'sensorium {line}' does not parse (exit {exc.code})")


def test_installer_flags_in_the_guide_exist() -> None:
    checked = set()
    for script in ("install-worker.sh", "install-edge.sh"):
        text = (REPO / "deploy" / script).read_text()
        for flags in re.findall(rf"{script}((?: --?[a-z-]+(?: [^\s`-][^\s`]*)?)+)", DOC):
            for flag in re.findall(r"--[a-z-]+", flags):
                assert f"    {flag})" in text, f"{script} has no {flag} (docs/deploy.md uses it)"
                checked.add((script, flag))
    assert len(checked) >= 8, checked


def test_paths_named_in_the_guide_exist() -> None:
    for path in set(re.findall(r"`((?:deploy|examples|tests|requirements)/[\w./@-]+)`", DOC)):
        assert (REPO / path).exists(), path
