"""The stage graph: who produces and consumes each message type in a deployment, and the mismatches named."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from sensorium import graph
from sensorium.deployment import deployment_from_dict, load_deployment

ROOT = Path(__file__).resolve().parent.parent


def _dep(stages: list[str], *, mic: bool = True, cameras: bool = False, playback: bool = False) -> dict:
    edge: dict = {"room": "kitchen"}
    if mic:
        edge["microphone"] = {"file": "x.wav"}
    if cameras:
        edge["cameras"] = {"cam": {"source": "frames/"}}
    if playback:
        edge["playback"] = {"wav_dir": "tts"}
    return {"rooms": {"kitchen": {}}, "edges": {"kitchen-pi": edge}, "workers": {"gpu0": {"stages": stages}}}


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_the_examples_are_whole(example: Path) -> None:
    dep = load_deployment(example)
    assert graph.check(dep) == []


def test_every_link_names_its_producer_type_and_consumer() -> None:
    dep = load_deployment(ROOT / "examples" / "deploy-4gpu.toml")
    links = {(p.name, graph._type(m), c.name) for p, m, c in graph.build(dep).links()}
    assert ("stt", "utterance", "speaker") in links
    assert ("kitchen-pi", "audio", "wake") in links
    assert ("detect", "detections", "face") in links
    assert ("tts", "tts_audio", "kitchen-pi") in links
    assert ("presence", "presence", "event log") in links
    text = graph.text(graph.build(dep), [])
    assert "stt [gpu0 (cuda:0 or cpu)]  →  speaker [gpu1 (cuda:0 or cpu)]" in text


def test_a_stage_without_input_is_an_error_naming_stage_and_type() -> None:
    dep = deployment_from_dict(_dep(["speaker"]))
    issues = graph.check(dep)
    errors = [i for i in issues if i.level == "error"]
    assert len(errors) == 1 and errors[0].stage == "speaker"
    assert "nothing produces utterance" in errors[0].text
    warning = next(i for i in issues if i.level == "warning")
    assert "consumes utterance (utterance/)" in warning.text and "place stt on a worker" in warning.text


def test_an_unconsumed_stream_and_a_missing_device_are_warnings() -> None:
    issues = graph.check(deployment_from_dict(_dep(["wake", "stt", "tts"], playback=False)))
    texts = [i.text for i in issues]
    assert all(i.level == "warning" for i in issues), texts
    assert any("stt on gpu0 (cpu) emits utterance" in t and "place speaker" not in t for t in texts), texts
    assert any("tts on gpu0 (cpu) emits tts_audio" in t and "playback" in t for t in texts), texts
    # detect without a camera: nothing produces video
    issues = graph.check(deployment_from_dict(_dep(["detect"])))
    assert [i.level for i in issues] == ["warning", "error"]
    assert "consumes video (video/)" in issues[0].text and "cameras" in issues[0].text


def test_loading_a_file_logs_the_mismatches(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = tmp_path / "deploy.toml"
    cfg.write_text('[rooms.kitchen]\n[edges.pi]\nroom = "kitchen"\n[workers.w]\nstages = ["speaker"]\n')
    with caplog.at_level(logging.WARNING, logger="sensorium.deployment"):
        load_deployment(cfg)
    assert "stage speaker on w (cpu) can never get input: nothing produces utterance" in caplog.text


def test_cli_prints_the_graph_and_fails_on_an_error(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "sensorium", "graph", "--config", str(ROOT / "examples" / "deploy-phase0.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert ok.returncode == 0, ok.stderr
    assert "utterance" in ok.stdout and "speaker [box" in ok.stdout
    out = tmp_path / "g.mmd"
    four_gpus = str(ROOT / "examples" / "deploy-4gpu.toml")
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "graph", "--config", four_gpus, "--format", "mermaid", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stderr
    mmd = out.read_text()
    assert mmd.startswith("flowchart LR") and "stage_stt -->|utterance| stage_speaker" in mmd
    bad = tmp_path / "bad.toml"
    bad.write_text('[rooms.kitchen]\n[edges.pi]\nroom = "kitchen"\n[workers.w]\nstages = ["speaker"]\n')
    r = subprocess.run(
        [sys.executable, "-m", "sensorium", "graph", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 1
    assert "ERROR: stage speaker on w (cpu) can never get input: nothing produces utterance" in r.stdout
