"""The MQTT bridge with a real Home Assistant: the sample session, played through every stage, shows up in HA.

Home Assistant core runs from ``.venv-homeassistant`` with its MQTT integration added through the
config-flow REST API; mosquitto is Debian's; the pipeline is the embedded deployment with every stage
on the CPU, replaying the bundled sample session at speed 1 (people entering and leaving the kitchen
and the living room, three voices). Mosquitto is killed and restarted twice during the session.
What a user checks is read from HA itself: ``/api/states`` and its ``state_changed`` events.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
from mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks import mqtt as bench  # noqa: E402
from sensorium.evaluation.session import PeopleLabel, SpeechLabel  # noqa: E402
from sensorium.pipeline.messages import PlaybackStatus, SpeakerIdentified  # noqa: E402

pytestmark = pytest.mark.slow
HOMEASSISTANT_CONFIG = bench.HA_CONFIG  # greets whoever enters the kitchen through the bridge's say command
RESTART_GRACE = 12.0
"""After a broker restart, HA's MQTT client can take up to its 10 s retry interval to come back."""


def _state_at(changes: list[bench.Change], entity: str, t: float) -> str | None:
    """What HA showed for ``entity`` at time ``t``."""
    shown = [c for c in changes if c.entity == entity and c.t <= t]
    return shown[-1].value if shown else None


async def test_home_assistant_follows_the_session_through_broker_restarts(
    home_assistant: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    broker = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    try:
        run = await bench.run_session(home_assistant, broker, tmp_path_factory.mktemp("session"), restarts=2)
    finally:
        broker.stop()
    cmp = bench.compare(run)
    near_restart = [(r["down"] - 1.0, r["up"] + RESTART_GRACE) for r in run.restarts]
    assert len(run.restarts) == 2 and run.bridge["connects"] == 3

    # HA ends with the state the events imply, shows nothing they do not imply (no replays, no
    # duplicates), and misses only states that began and ended while its own MQTT client was away.
    assert cmp["wrong_final"] == {}, cmp["wrong_final"]
    assert cmp["wrong_retained"] == {}, cmp["wrong_retained"]  # what a restarted HA would read
    assert cmp["extra"] == {}, cmp["extra"]
    assert cmp["missed_while_ha_online"] == {}, cmp["missed_while_ha_online"]
    assert cmp["expected_changes"] >= 20

    # at the right moments: away from the restarts, every change is in HA within 4 s of the capture
    # behind it (presence decides "left" after its timeout; that decision is the event's time)
    timely = [m for m in cmp["matched"] if not any(a <= m["event"] <= b or a <= m["ha"] <= b for a, b in near_restart)]
    assert len(timely) >= 10
    late = [m for m in timely if not -0.5 <= m["ha"] - m["event"] <= 4.0]
    assert not late, late

    # the cameras: two strangers in the kitchen from the start turn its occupancy on, and off after they go
    kitchen = next(lb for lb in run.labels if isinstance(lb, PeopleLabel) and lb.room == "kitchen")
    start, end = kitchen.t0 + run.offset, kitchen.t1 + run.offset
    assert _state_at(run.changes, "binary_sensor.kitchen_occupancy", start + 4.0) == "on"
    assert int(_state_at(run.changes, "sensor.kitchen_people", start + 4.0) or 0) >= 2  # and joe, once he speaks
    offs = [
        c.t for c in run.changes if c.entity == "binary_sensor.kitchen_occupancy" and c.value == "off" and c.t > end
    ]
    assert offs, "kitchen occupancy never went off after the people left"
    assert run.final_ha["binary_sensor.living_room_occupancy"] == "off"

    # the voices: speaker ID named the labelled speakers (the pipeline), each of them was placed in the
    # room they spoke in, and HA showed it unless it happened while HA's MQTT client was away (above)
    spoken = [lb for lb in run.labels if isinstance(lb, SpeechLabel) and lb.wake and lb.speaker]
    ids = [e for e in run.events if isinstance(e, SpeakerIdentified)]
    right = sum(
        any(e.room == lb.room and e.person == lb.speaker and e.time >= lb.t0 + run.offset for e in ids) for lb in spoken
    )
    assert right >= len(spoken) - 2, f"speaker ID named {right} of {len(spoken)} labelled speakers"
    shown = {(m["entity"], m["value"]) for m in cmp["matched"]}
    placed = [lb for lb in spoken if (f"sensor.{lb.speaker}_room", lb.room) in shown]
    assert len(placed) >= 2, f"HA placed {[(lb.speaker, lb.room) for lb in placed]}"
    assert all(any(e == f"device_tracker.{lb.speaker}" and v == "home" for e, v in shown) for lb in placed)
    for room in run.rooms:
        assert run.final_ha[f"sensor.{room}_last_speaker"] in {lb.speaker for lb in spoken} | {"unknown"}

    # the automation in HA's configuration: occupancy off → on in the kitchen publishes say/kitchen,
    # and our TTS speaks the greeting there, where the room's speaker plays it
    ons = [c.t for c in run.changes if c.entity == "binary_sensor.kitchen_occupancy" and c.value == "on"]
    greetings = [(room, t) for room, text, t in run.tts if bench.WELCOME in text.lower()]
    assert greetings, f"no greeting synthesized; TTS said {run.tts}"
    assert {room for room, _ in greetings} == {"kitchen"}
    assert any(0 < greetings[0][1] - t < 5.0 for t in ons), (greetings, ons)
    played = [e for e in run.events if isinstance(e, PlaybackStatus) and e.room == "kitchen" and e.state != "stopped"]
    assert played, "the kitchen's speaker played nothing"
