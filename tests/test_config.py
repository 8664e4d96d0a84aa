"""Deployment files: validated on load; every mistake names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensorium.pipeline.config import ConfigError, from_dict, load, parse_duration

ROOT = Path(__file__).resolve().parent.parent


class WakeOptions(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    threshold: float = 0.5


STAGES = {"wake": WakeOptions, "stt": WakeOptions}
GOOD = {
    "rooms": {"kitchen": {}},
    "edges": {"kitchen-pi": {"room": "kitchen", "microphone": {"block_ms": 80}}},
    "workers": {"gpu0": {"stages": ["wake", "stt"], "device": ["cuda:0", "cpu"]}},
    "stages": {"wake": {"budget": "200ms", "threshold": 0.3}},
}


def _with(**changes: object) -> dict:
    raw = {k: (dict(v) if isinstance(v, dict) else v) for k, v in GOOD.items()}
    raw.update(changes)
    return raw


def test_good_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "deploy.toml"
    path.write_text(
        '[rooms.kitchen]\n[edges.kitchen-pi]\nroom = "kitchen"\n[workers.gpu0]\nstages = ["wake"]\n'
        '[stages.wake]\nbudget = "150ms"\nthreshold = 0.7\n'
    )
    dep = load(path, STAGES, {"wake": 0.25, "stt": 1.5})
    assert dep.stages["wake"].budget_s == pytest.approx(0.15)
    assert dep.stages["wake"].options.threshold == 0.7
    assert dep.stages["stt"].budget_s == 1.5  # default budget from the stage
    assert dep.worker("gpu0").devices() == ["cpu"]
    assert dep.speaker_of("kitchen") == "kitchen-pi"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (_with(hub={"adress": "tcp://x:1"}), r"deploy.toml: \[hub\] unknown key 'adress'"),
        (_with(stages={"wake": {"treshold": 1}}), r"\[stages.wake\] unknown key 'treshold'"),
        (_with(stages={"wake": {"threshold": "high"}}), r"\[stages.wake\] threshold: Expected `float`, got `str`"),
        (_with(stages={"wake": {"budget": "fast"}}), r"\[stages.wake\] budget: expected a duration like '200ms'"),
        (_with(stages={"wakeword": {}}), r"\[stages.wakeword\] unknown stage \(expected one of: stt, wake\)"),
        (
            _with(workers={"gpu0": {"stages": ["wake", "sst"]}}),
            r"\[workers.gpu0\] stages: unknown stage 'sst' \(expected one of: stt, wake\)",
        ),
        (_with(workers={"gpu0": {"stages": ["wake"], "device": "gpu0"}}), r"\[workers.gpu0\] device: expected 'cpu'"),
        (
            _with(workers={"gpu0": {"stages": ["wake"], "max_future": "soon"}}),
            r"\[workers.gpu0\] max_future: expected a duration",
        ),
        (_with(rooms={"kitchen": {}, "attic": {}}), r"\[rooms.attic\] no edge node serves this room"),
        (_with(edges={"pi": {"room": "garage"}}), r"\[edges.pi\] room = 'garage' is not a room of \[rooms\]"),
        (_with(hub={"heartbeat": "soon"}), r"\[hub\] heartbeat: expected a duration"),
        (
            _with(edges={"pi": {"room": "kitchen", "cameras": {"c": {"fps": "five"}}}}),
            r"\[edges.pi.cameras.c\] fps: Expected `float`",
        ),
    ],
)
def test_mistakes_are_named(raw: dict, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        from_dict(raw, STAGES, {}, "deploy.toml")


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[rooms.kitchen\n")
    with pytest.raises(ConfigError, match=r"bad.toml: not valid TOML"):
        load(bad, STAGES)
    with pytest.raises(ConfigError, match="file not found"):
        load(tmp_path / "nope.toml", STAGES)


def test_unknown_worker_is_named() -> None:
    dep = from_dict(GOOD, STAGES, {}, "deploy.toml")
    with pytest.raises(ConfigError, match=r"no worker named 'gpu9' \(known: gpu0\)"):
        dep.worker("gpu9")


@given(st.one_of(st.text(max_size=12), st.floats(allow_nan=False), st.integers(-5, 10**6)))
def test_parse_duration_accepts_or_explains(value: object) -> None:
    try:
        seconds = parse_duration(value)  # type: ignore[arg-type]
    except ConfigError as exc:
        assert "duration" in str(exc)
    else:
        assert seconds >= 0


@pytest.mark.parametrize(("text", "seconds"), [("200ms", 0.2), ("1.5s", 1.5), ("2m", 120), ("3", 3), (0.25, 0.25)])
def test_parse_duration_units(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_example_deployments_differ_only_in_placement() -> None:
    from sensorium.deployment import load_deployment

    one = load_deployment(ROOT / "examples/deploy-phase0.toml")
    four = load_deployment(ROOT / "examples/deploy-4gpu.toml")
    assert (one.hub, one.rooms, one.edges, one.stages) == (four.hub, four.rooms, four.edges, four.stages)
    assert sorted(s for w in one.workers.values() for s in w.stages) == sorted(
        s for w in four.workers.values() for s in w.stages
    )
    assert len(one.workers) == 1 and len(four.workers) == 4


def test_every_duration_of_every_table_is_seconds_once_the_file_loads() -> None:
    """One way to read a time span: decoded when the table loads; readers get a float and never parse again."""
    import sensorium.pipeline.config as config_module
    from sensorium.deployment import deployment_from_dict
    from sensorium.pipeline.config import Duration, _Strict, durations
    from sensorium.registry import available

    raw = _with(
        hub={"heartbeat": "250ms", "down_after": "1.5s", "takeover_after": 1, "handback_after": "2m"},
        workers={"gpu0": {"stages": ["wake", "stt", "presence", "detect"], "max_future": "3s"}},
        stages={"presence": {"left_after": "45s", "tick": "100ms"}, "stt": {"trailing_silence": "500ms"}},
        mqtt={"refresh": "1m"},
        esphome={"greet_cooldown": "2h"},
        mcp={"ask_timeout": "20s"},
        console={"retention": "1d", "face_every": "5s"},
        wyoming={"timeout": "4s", "speaker_wait": "250ms"},
    )
    dep = deployment_from_dict(raw)
    assert (dep.hub.heartbeat, dep.hub.down_after, dep.hub.takeover_after, dep.hub.handback_after) == (
        0.25,
        1.5,
        1.0,
        120.0,
    )
    assert dep.worker("gpu0").max_future == 3.0 and dep.mqtt is not None and dep.mqtt.refresh == 60.0
    assert dep.esphome is not None and dep.esphome.greet_cooldown == 7200.0
    assert dep.mcp is not None and dep.mcp.ask_timeout == 20.0
    assert dep.console is not None and (dep.console.retention, dep.console.face_every) == (86400.0, 5.0)
    assert dep.wyoming is not None and (dep.wyoming.timeout, dep.wyoming.speaker_wait) == (4.0, 0.25)
    assert dep.stages["presence"].options.left_after == 45.0 and dep.stages["stt"].options.trailing_silence == 0.5

    # Every Duration field of every table and stage, whatever its default: a float of seconds.
    tables = [c for c in vars(config_module).values() if isinstance(c, type) and issubclass(c, _Strict)]
    assert {"HubConfig", "WorkerConfig", "MqttConfig", "EsphomeConfig", "McpConfig"} <= {c.__name__ for c in tables}
    objects = [dep.hub, *dep.workers.values(), dep.mqtt, dep.esphome, dep.mcp, dep.console, dep.wyoming]
    objects += [s.options for s in dep.stages.values()]
    for obj in objects:
        for key in durations(type(obj)):
            assert type(getattr(obj, key)) is float, f"{type(obj).__name__}.{key} = {getattr(obj, key)!r}"
    stages_with = [n for n, c in available().items() if durations(c.Options)]
    assert {"wake", "stt", "presence", "detect"} <= set(stages_with)
    assert Duration == (str | float)


@pytest.mark.parametrize(
    ("table", "key"),
    [("mqtt", "refresh"), ("esphome", "greet_cooldown"), ("mcp", "ask_timeout"), ("console", "retention")],
)
def test_a_bad_duration_in_a_bridge_table_names_the_table_and_key(table: str, key: str) -> None:
    from sensorium.deployment import deployment_from_dict

    with pytest.raises(ConfigError, match=rf"\[{table}\] {key}: expected a duration like '200ms'"):
        deployment_from_dict(_with(**{table: {key: "soon"}}), "deploy.toml")
