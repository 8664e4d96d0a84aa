"""A stage is declared once, on its class: the registry, the worker's subscriptions, doctor's library checks
and the report's answers all read that declaration; message families come from the classes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sensorium.deployment import deployment_from_dict
from sensorium.evaluation.report import event_stages
from sensorium.pipeline import messages as m
from sensorium.pipeline.client import prefixes_for
from sensorium.pipeline.config import ConfigError, durations
from sensorium.pipeline.messages import AudioChunk, Message, WakeDetected
from sensorium.pipeline.stage import Stage, StageOptions
from sensorium.registry import STAGES, available, stage_class

ROOT = Path(__file__).resolve().parent.parent


def test_a_prefix_string_is_refused_where_the_stage_is_defined() -> None:
    """The old way (a topic prefix with a typo subscribed to nothing) now fails at import, naming the stage."""
    with pytest.raises(TypeError, match=r"Typo\.consumes: 'audoi/' is not a message class"):

        class Typo(Stage):
            name = "typo"
            consumes = ("audoi/",)  # type: ignore[assignment]

            async def handle(self, msg: Message) -> None:
                pass


def test_answers_must_be_emitted() -> None:
    with pytest.raises(TypeError, match="answers"):

        class Odd(Stage):
            name = "odd"
            consumes = (AudioChunk,)
            answers = (WakeDetected,)

            async def handle(self, msg: Message) -> None:
                pass


def test_every_module_of_nodes_is_a_stage_named_after_it() -> None:
    modules = {p.stem for p in (ROOT / "nodes").iterdir() if p.suffix == ".py" or (p / "__init__.py").exists()}
    assert set(STAGES) == modules - {"__init__"} - {n for n in modules if n.startswith("_")}
    for name, cls in available().items():
        assert cls.name == name and cls is stage_class(name)


def test_subscriptions_are_the_families_of_what_a_stage_consumes() -> None:
    stt = stage_class("stt")
    assert stt.topics() == ("audio/", "wake/", "speaker/", "arbitration/", "listen/")
    assert stage_class("tts").topics() == ("say/", "stop_playback/", "presence/")


def test_the_report_attributes_answers_from_the_declarations() -> None:
    assert set(event_stages().values()) <= set(STAGES)
    assert (
        event_stages().items()
        >= {
            "wake": "wake",
            "transcript": "stt",
            "speaker": "speaker",
            "detections": "detect",
            "face": "face",
            "presence": "presence",
            "tts_audio": "tts",
        }.items()
    )
    assert "arbitration" not in event_stages()  # the arbiter declares no answers: no latency row of its own


def test_doctor_checks_the_libraries_a_stage_declares() -> None:
    assert [lib.module for lib in stage_class("stt").libraries] == ["faster_whisper"]
    assert [lib.module for lib in stage_class("detect").libraries] == ["ultralytics"]


def test_message_families_come_from_the_classes() -> None:
    assert m.EVENTS[0] is m.WakeDetected and m.WakeArbitrated in m.EVENTS
    assert m.CLIENT_EVENTS == (m.EventsLost,)
    assert set(m.COMMANDS) == {m.Say, m.StopPlayback, m.StartConversation, m.PlaybackGain, m.Listen}
    assert all(issubclass(c, m.Control) for c in m.CONTROL) and m.Register in m.CONTROL
    assert len(m.ALL) == len(set(m.ALL)) == len(m.BY_TAG)
    # public type names and topic kinds: the client subscribes by either
    assert prefixes_for(["budget_violation", "node_status", "wake"]) == ["budget_violation/", "node_status/", "wake/"]
    assert prefixes_for(["status"]) == ["node_status/"]  # an old topic kind, still understood


def test_every_stage_declares_options_the_same_way() -> None:
    for name, cls in available().items():
        assert issubclass(cls.Options, StageOptions), f"{name}: Options must subclass pipeline.stage.StageOptions"


@pytest.mark.parametrize(
    ("stage", "key"),
    [(n, k) for n, c in sorted(available().items()) for k in durations(c.Options)],
    ids=lambda v: str(v),
)
def test_a_bad_duration_fails_when_the_file_loads_naming_the_key(stage: str, key: str) -> None:
    """Before, a bad ``trailing_silence`` loaded and then killed the worker when the stage started."""
    raw = {
        "rooms": {"kitchen": {}},
        "edges": {"pi": {"room": "kitchen"}},
        "workers": {"w": {"stages": [stage]}},
        "stages": {stage: {key: "0.7 seconds"}},
    }
    with pytest.raises(ConfigError, match=rf"\[stages\.{stage}\] {key}: expected a duration like '200ms'"):
        deployment_from_dict(raw)
    raw["stages"] = {stage: {key: "250ms"}}
    opts = deployment_from_dict(raw).stages[stage].options
    assert opts.seconds(key) == 0.25
