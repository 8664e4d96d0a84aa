"""The Home Assistant test harness itself: HA core starts, is onboarded, and answers REST and WebSocket calls."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from sensorium.evaluation.homeassistant import HomeAssistantError

pytestmark = pytest.mark.slow

HOMEASSISTANT_CONFIG = """\
input_boolean:
  harness_check:
    name: Harness check
"""


async def test_home_assistant_starts_onboarded_and_answers(home_assistant: Any) -> None:
    ha = home_assistant
    print(f"Home Assistant answered after {ha.start_seconds:.1f} s, onboarded in {ha.onboard_seconds:.1f} s")
    config = await ha.request("GET", "/api/config")
    assert config["state"] == "RUNNING"
    assert config["location_name"] == "sensorium tests"
    assert config["version"] == "2025.4.4"
    assert {"api", "http", "config", "input_boolean"} <= set(config["components"])
    # onboarding is finished: the owner exists and every step is done
    async with httpx.AsyncClient() as http:
        steps = (await http.get(f"{ha.url}/api/onboarding")).json()
        assert all(s["done"] for s in steps), steps
        # the API refuses a request without the token
        assert (await http.get(f"{ha.url}/api/config")).status_code == 401
    users = await ha.ws("config/auth/list")
    assert any(u["name"] == "Test Owner" and u["is_owner"] for u in users)


async def test_states_follow_a_service_call(home_assistant: Any) -> None:
    ha = home_assistant
    assert (await ha.states())["input_boolean.harness_check"]["state"] == "off"
    async with ha.websocket() as ws:
        events = await ws.subscribe_events("state_changed")
        t0 = time.time()
        await ws.call(
            "call_service",
            domain="input_boolean",
            service="turn_on",
            target={"entity_id": "input_boolean.harness_check"},
        )
        event = await events.get()
    assert event["data"]["entity_id"] == "input_boolean.harness_check"
    assert event["data"]["new_state"]["state"] == "on"
    state = await ha.wait_for_state("input_boolean.harness_check", "on", timeout=5)
    assert state is not None and state["last_changed"]
    assert time.time() - t0 < 5
    with pytest.raises(HomeAssistantError, match="did not reach 'off' within"):
        await ha.wait_for_state("input_boolean.harness_check", "off", timeout=0.5)


async def test_a_config_flow_error_names_the_step(home_assistant: Any) -> None:
    # MQTT against a port nothing listens on: the flow shows its form again with an error
    from sensorium.evaluation.ports import free_port

    with pytest.raises(HomeAssistantError, match=r"mqtt config flow, step broker: .*cannot_connect"):
        await home_assistant.add_integration("mqtt", {"broker": "127.0.0.1", "port": free_port()})
