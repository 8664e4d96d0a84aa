"""Shared fixtures: a running hub on a fresh ipc address; a real Home Assistant per test file; and
modules hypothesis can read."""

from __future__ import annotations

import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from sensorium.pipeline.config import HubConfig
from sensorium.pipeline.hub import Hub


@pytest.fixture
def hub_address(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/hub-{uuid.uuid4().hex[:6]}"


@pytest.fixture(autouse=True)
def _readable_modules_for_hypothesis(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Hypothesis reads every loaded module's ``__file__``; speechbrain leaves lazy optional modules in
    ``sys.modules`` that raise ImportError on any attribute read, which crashed any hypothesis test that ran
    after a test that loaded speechbrain. Hide those modules from hypothesis tests only."""
    if not getattr(request.function, "is_hypothesis_test", False):
        return
    for name, module in list(sys.modules.items()):
        try:
            getattr(module, "__file__", None)
        except Exception:
            monkeypatch.delitem(sys.modules, name)


@pytest.fixture
async def hub(hub_address: str, tmp_path: Path) -> AsyncIterator[Hub]:
    h = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5, event_log=1000), state_dir=tmp_path / "state")
    await h.start()
    try:
        yield h
    finally:
        await h.stop()


@pytest.fixture(scope="module")
def home_assistant(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Home Assistant started and onboarded once per test file (``evaluation/homeassistant.py``).

    A test file adds to HA's configuration.yaml with a module-level ``HOMEASSISTANT_CONFIG`` string.
    """
    from sensorium.evaluation.homeassistant import running

    extra = getattr(request.module, "HOMEASSISTANT_CONFIG", "")
    with running(tmp_path_factory.mktemp("homeassistant"), extra) as ha:
        yield ha


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    # A failing test that used Home Assistant shows the end of HA's log in its report.
    report = yield
    ha = getattr(item, "funcargs", {}).get("home_assistant")
    if report.failed and ha is not None:
        report.sections.append(("Home Assistant log", ha.log_tail()))
    return report
