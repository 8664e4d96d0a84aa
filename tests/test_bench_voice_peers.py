"""The Home Assistant peers of the voice benchmark really run: wake event and transcript for one utterance.

Starts ``wyoming-openwakeword`` and ``wyoming-faster-whisper`` from their venvs (made by
``scripts/setup.sh``) with the bundled models, streams one Piper "hey jarvis, turn on the
kitchen lights" in real time through the satellite client, and checks what a user would: the wake
word fired shortly after "hey jarvis" ended, and the transcript has the command's words.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # benchmarks/ is not an installed package
    sys.path.insert(0, str(ROOT))

from benchmarks.peers import servers as peers  # noqa: E402
from benchmarks.voice import normalize, wer  # noqa: E402
from benchmarks.voice_media import build_session  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def peer_servers() -> Iterator[peers.PeerServers]:
    reason = peers.missing_reason()
    if reason:
        pytest.skip(f"Wyoming peers not installed: {reason}")
    with peers.PeerServers(peers.PeerOptions(beam_size=1)) as srv:
        yield srv


def test_peers_detect_wake_and_transcribe(peer_servers: peers.PeerServers) -> None:
    session = build_session(1)  # u00: Piper joe, "hey jarvis" + "turn on the kitchen lights"
    u = session.utterances[0]
    cpu0 = peer_servers.cpu()
    result = peer_servers.run_client(session.to_json(), endpoint_s=0.7)
    cpu1 = peer_servers.cpu()

    detections = [d for d in result["detections"] if u.start <= d["t"] < u.window_end]
    assert detections, f"no wake detection; server log:\n{peer_servers.log_tail('wyoming-openwakeword')}"
    assert detections[0]["name"].startswith("hey_jarvis")
    # Fired after the phrase began and within a second of its end (real time, 80 ms chunks).
    assert u.start < detections[0]["t"] < u.wake_end + 1.0

    (req,) = result["stt"]
    assert "error" not in req, req
    assert wer(u.command, req["text"]) <= 0.2, (normalize(req["text"]), u.command)
    # The transcript came after AudioStop, which went out at end of speech + 0.7 s (80 ms boundary).
    assert u.speech_end + 0.7 <= req["t_stop"] < u.speech_end + 0.7 + 0.2
    assert req["t_stop"] < req["t_transcript"]
    # Both servers did real work on this audio.
    assert cpu1["wyoming-openwakeword"] > cpu0["wyoming-openwakeword"]
    assert cpu1["wyoming-faster-whisper"] > cpu0["wyoming-faster-whisper"]
