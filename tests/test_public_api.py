"""What an agent author imports: ``from sensorium import Client``, without reaching into the folders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_agent_authors_import_the_client_and_the_messages_from_sensorium() -> None:
    import sensorium.pipeline.client
    import sensorium.pipeline.messages
    from sensorium import Client, collect, messages

    assert Client is sensorium.pipeline.client.Client and collect is sensorium.pipeline.client.collect
    assert messages is sensorium.pipeline.messages and messages.Transcript.__name__ == "Transcript"


def test_an_unknown_name_is_a_clear_attribute_error() -> None:
    import sensorium

    try:
        sensorium.Clinet  # noqa: B018
    except AttributeError as exc:
        assert "Clinet" in str(exc)
    else:
        raise AssertionError("sensorium.Clinet resolved")


def test_importing_sensorium_alone_loads_no_zeromq() -> None:
    code = "import sys, sensorium; print('zmq' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
