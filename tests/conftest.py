"""Shared fixtures: a running hub on a fresh ipc address."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pipeline.config import HubConfig
from pipeline.hub import Hub


@pytest.fixture
def hub_address(tmp_path: Path) -> str:
    return f"ipc://{tmp_path}/hub-{uuid.uuid4().hex[:6]}"


@pytest.fixture
async def hub(hub_address: str, tmp_path: Path) -> AsyncIterator[Hub]:
    h = Hub(HubConfig(address=hub_address, heartbeat=0.1, down_after=0.5, event_log=1000), state_dir=tmp_path / "state")
    await h.start()
    try:
        yield h
    finally:
        await h.stop()
