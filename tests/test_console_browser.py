"""The console in a real browser (Debian's chromium through chromedriver, headless).

A real hub, the console's real app under uvicorn; the page is driven as a user would: it loads, a
room fills while a session plays onto the bus (and, slow, while the bundled sample session replays
through the real vision stages), an unknown face found by the real detector and face
stage is named in the inbox (three clicks) and the face stage's next recognition of that person
carries the name, a cross-modal proposal is accepted, and the live view reconnects after the hub
restarts. ``SCREENSHOTS=docs/console`` saves the pages as PNG for docs/console.md.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import images
import numpy as np
import pytest
import webdriver
from console_rig import Rig
from test_console import person_vectors

from sensorium.bridges.console.service import Embedding
from sensorium.models.gallery import Gallery
from sensorium.pipeline.messages import (
    Box,
    Detections,
    FaceRecognized,
    NodeStatus,
    Presence,
    SpeakerIdentified,
    StageStats,
    Transcript,
    VideoFrame,
)

pytestmark = pytest.mark.skipif(not webdriver.available(), reason="needs chromium and chromium-driver (apt)")
SHOTS = os.environ.get("SCREENSHOTS", "")


@pytest.fixture
def browser() -> Iterator[webdriver.Browser]:
    b = webdriver.Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def shot(b: webdriver.Browser, name: str) -> None:
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        b.screenshot(Path(SHOTS) / f"{name}.png")


def session(rig: Rig) -> None:
    """A short morning in two rooms, as the stages would publish it: alice and an unknown guest in the
    kitchen (on camera), bob speaking in the office, the stages' numbers."""
    assert images.ZIDANE is not None
    frame = images.jpeg(images.load(images.ZIDANE), 80)
    steps = [
        NodeStatus(source="kitchen-pi", node="kitchen-pi", role="edge", state="up", detail="mic, camera"),
        NodeStatus(source="gpu0", node="gpu0", role="worker", state="up", detail="serving 8 stages"),
        VideoFrame(seq=1, room="kitchen", source="kitchen-cam", width=1280, height=720, data=frame),
        Detections(
            room="kitchen",
            source="detect",
            camera="kitchen-cam",
            persons=2,
            frame_seq=1,
            boxes=[Box(90, 150, 760, 720, 0.92, 1), Box(760, 60, 1160, 720, 0.9, 2)],
        ),
        FaceRecognized(room="kitchen", source="face", camera="kitchen-cam", person="alice", score=0.71, track=1),
        Presence(room="kitchen", source="presence", person="alice", state="entered", confidence=0.71, sources=["face"]),
        Presence(room="kitchen", source="presence", person="unknown", state="entered", people=2, unknown=1),
        Transcript(
            room="office", source="stt", final=True, text="what's the weather", speaker="bob", speaker_score=0.84
        ),
        Presence(room="office", source="presence", person="bob", state="entered", confidence=0.84, sources=["voice"]),
        StageStats(source="gpu0", stage="detect", inputs=40, rate=5, p50_ms=62, p95_ms=91, budget_ms=150),
        StageStats(source="gpu0", stage="face", inputs=12, rate=2, p50_ms=38, p95_ms=170, budget_ms=150, violations=2),
    ]
    for m in steps:
        rig.publish(m)
        time.sleep(0.15)  # as a session plays: the page fills while it runs


def test_page_loads_and_rooms_fill_while_a_session_plays(rig: Rig, browser: webdriver.Browser) -> None:
    browser.get(rig.url)
    browser.wait_for(lambda: "hub connected" in browser.text("#hub"), what="live connection")
    assert "no room heard from yet" in browser.text("#rooms")
    session(rig)
    browser.wait_for(lambda: "alice" in browser.text('[data-room="kitchen"]'), what="alice in the kitchen")
    browser.wait_for(lambda: "bob" in browser.text('[data-room="office"]'), what="bob in the office")
    kitchen = browser.text('[data-room="kitchen"]')
    assert "unknown 1" in kitchen and "face" in kitchen and "2 here" in kitchen
    # the camera frame with its boxes, the recognized track named
    browser.wait_for(lambda: browser.finds('[data-room="kitchen"] .cam img'), what="camera frame")
    labels = browser.script("return [...document.querySelectorAll('.boxname')].map(e => e.textContent)")
    assert sorted(labels) == ["alice", "person"]
    assert browser.script("return document.querySelector('.cam img').naturalWidth") == 1280
    assert "gpu0" in browser.text(".corner") and "kitchen-pi" in browser.text(".corner")
    shot(browser, "rooms")
    browser.get(rig.url + "timeline")
    assert "what's the weather" in browser.text("#timeline-body")
    rig.publish(Transcript(room="office", source="stt", final=True, text="thanks", speaker="bob", speaker_score=0.8))
    browser.wait_for(lambda: "thanks" in browser.text("#timeline-body"), what="a live row")
    shot(browser, "timeline")
    browser.get(rig.url + "health")
    browser.wait_for(lambda: browser.finds('[data-stage="face"]'), what="stage stats")
    assert browser.finds('[data-stage="face"] .bar i.over') and not browser.finds('[data-stage="detect"] .bar i.over')
    shot(browser, "health")


def test_live_view_reconnects_after_the_hub_restarts(rig: Rig, browser: webdriver.Browser) -> None:
    browser.get(rig.url)
    browser.wait_for(lambda: "hub connected" in browser.text("#hub"), what="connected")
    rig.call(rig.hub.stop())  # type: ignore[union-attr]
    browser.wait_for(lambda: "hub down" in browser.text("#hub"), what="the page says the hub is down")
    rig.call(rig._start_hub())
    browser.wait_for(lambda: "hub connected" in browser.text("#hub"), timeout=20, what="reconnected")
    rig.publish(Presence(room="hall", source="presence", person="carol", state="entered", sources=["voice"]))
    browser.wait_for(lambda: "carol" in browser.text("#rooms"), timeout=20, what="an event after the restart")


def test_cross_modal_proposal_appears_and_is_accepted(rig: Rig, browser: webdriver.Browser, tmp_path: Path) -> None:
    rig.publish(Presence(room="kitchen", source="presence", person="alice", state="entered", sources=["face"]))
    rig.wait(lambda: "alice" in str(rig.console.live.rooms.get("kitchen")), what="alice present")
    browser.get(rig.url + "inbox")
    for v in person_vectors(11, 3):
        rig.publish(SpeakerIdentified(room="kitchen", source="speaker", person="unknown", score=0.31))
        rig.wait(lambda: rig.store.events(type_="speaker", limit=1), what="speaker event")
        ev = SpeakerIdentified(seq=rig.store.last_seq, time=time.time(), room="kitchen", person="unknown")
        rig.call(rig.console.keep(ev, "voice", Embedding(vector=v, model_id="test-voice"), "wav"))
    browser.wait_for(lambda: browser.finds("[data-proposal=alice] button.accept"), what="the proposal")
    assert "3 of 3 voice samples" in browser.text("[data-proposal=alice]")
    shot(browser, "inbox-proposal")
    cid = browser.script("return document.querySelector('[data-proposal]').closest('[data-cluster]').dataset.cluster")
    browser.click(f"#consent-{cid}")
    browser.click("[data-proposal=alice] button.accept")  # two clicks
    browser.wait_for(lambda: not browser.finds("[data-proposal=alice]"), what="the cluster leaves the inbox")
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"alice": {"voice": 3}}


def test_person_page_reassigns_a_wrong_recognition_and_removes_the_person(
    rig: Rig, browser: webdriver.Browser, tmp_path: Path
) -> None:
    bob, alice = person_vectors(61, 2), person_vectors(62, 1)
    rig.identity.enroll("bob", "face", "test-face", bob)  # type: ignore[union-attr]
    rig.publish(FaceRecognized(room="kitchen", source="face", camera="cam", person="bob", score=0.55, track=1))
    rig.wait(lambda: rig.store.events(type_="face", limit=1), what="the recognition")
    ev = FaceRecognized(seq=rig.store.last_seq, time=time.time(), room="kitchen", camera="cam", person="bob", track=1)
    rig.call(rig.console.keep(ev, "face", Embedding(vector=alice[0], model_id="test-face", media=b"\xff\xd8"), "jpg"))
    browser.get(rig.url + "person/bob")
    assert "2 face" in browser.text("main")
    sid = browser.script("return document.querySelector('[data-sample]').dataset.sample")
    browser.type(f"#to-{sid}", "alice")
    browser.click(f"[data-sample='{sid}'] button.reassign")
    browser.wait_for(lambda: not browser.finds(f"[data-sample='{sid}']"), what="the recognition leaves bob's page")
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"alice": {"face": 1}, "bob": {"face": 2}}
    shot(browser, "person")
    browser.click("button.remove")
    browser.accept_alert()
    browser.wait_for(lambda: browser.script("return location.pathname") == "/", what="back to the rooms")
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"alice": {"face": 1}}


@pytest.mark.slow
def test_rooms_fill_while_the_sample_session_replays(tmp_path: Path, browser: webdriver.Browser) -> None:
    """The bundled sample session (recorded MCAP: two rooms, people on camera) replayed through the real
    detect, face and presence stages on the hub the console follows."""
    import asyncio

    from sensorium.enrollment import enroll
    from sensorium.evaluation import replay as rp
    from sensorium.evaluation.media import package_image
    from sensorium.evaluation.session import build_sample

    cache = Path(__file__).resolve().parents[1] / ".cache" / "sample"
    session_path = tmp_path / "sample.mcap"
    build_sample(session_path, cache)
    gallery = tmp_path / "gallery.db"
    assert enroll("tom_hanks", gallery_path=gallery, face=[str(package_image("tom_hanks"))], face_model="facenet") == 0
    session = rp.load(session_path)
    dep = rp.default_deployment(
        session, data_dir=tmp_path, stages=["detect", "face", "presence"], options={"face": {"recognizer": "facenet"}}
    )
    rig = Rig(tmp_path, start_hub=False)
    done = asyncio.Event()

    async def play() -> None:
        from sensorium.embedded import embedded

        async with embedded(dep, address=rig.address) as env:
            await rp.replay_embedded(session, rp.ReplayOptions(speed=2.0, settle=1.0), env)
            await done.wait()

    try:
        running = asyncio.run_coroutine_threadsafe(play(), rig.loop)
        browser.get(rig.url)
        browser.wait_for(lambda: "tom_hanks" in browser.text("#rooms"), timeout=240, what="tom_hanks on camera")
        assert not running.done(), "the page filled only after the replay ended"
        browser.wait_for(lambda: "unknown" in browser.text('[data-room="kitchen"]'), timeout=120, what="kitchen")
        assert "face" in browser.text('[data-room="living_room"]')
        rig.loop.call_soon_threadsafe(done.set)
        running.result(300)
    finally:
        rig.loop.call_soon_threadsafe(done.set)
        rig.close()


@pytest.mark.slow
def test_unknown_face_is_named_and_the_next_recognition_carries_the_name(
    tmp_path: Path, browser: webdriver.Browser
) -> None:
    from sensorium.enrollment import ConsoleIdentity, Galleries
    from sensorium.models.detector import PersonDetector
    from sensorium.nodes.face import FaceOptions, FaceStage
    from sensorium.pipeline.stage import StageContext

    gallery = tmp_path / "gallery.db"
    identity = ConsoleIdentity(Galleries(voice=gallery, face=gallery, face_model="facenet"))
    rig = Rig(tmp_path, identity=identity)
    try:
        detector = PersonDetector()
        out: list = []

        async def emit(msg) -> None:  # type: ignore[no-untyped-def]
            out.append(msg)

        ctx = StageContext(
            name="face", worker="test", options=FaceOptions(recognizer="facenet"), data_dir=tmp_path, emit=emit
        )
        stage = FaceStage(ctx)
        rig.call(stage.start())

        def play(img: np.ndarray, camera: str, seq: int) -> list[FaceRecognized]:
            """One frame through the real detector and face stage; everything they publish goes to the hub."""
            data = images.jpeg(img, 90)
            boxes = detector.track([img], [f"kitchen/{camera}"])[0]
            h, w = img.shape[:2]
            frame = VideoFrame(seq=seq, time=time.time(), room="kitchen", source=camera, width=w, height=h, data=data)
            det = Detections(
                seq=seq,
                time=frame.time,
                room="kitchen",
                source="detect",
                camera=camera,
                persons=len(boxes),
                boxes=[Box(b.x1, b.y1, b.x2, b.y2, b.score, b.track) for b in boxes],
                frame_seq=seq,
            )
            n = len(out)
            rig.call(stage.handle(frame))
            rig.call(stage.handle(det))
            faces = [m for m in out[n:] if isinstance(m, FaceRecognized)]
            rig.publish(frame, det)
            time.sleep(0.2)  # the console has the frame and the boxes before the recognitions
            rig.publish(*faces)
            return faces

        astronaut = images.load(images.ASTRONAUT)
        first = play(astronaut, "kitchen-cam", 1)
        assert [f.person for f in first] == ["unknown"]
        browser.get(rig.url + "inbox")
        browser.wait_for(lambda: browser.finds("[data-kind=face] img.crop"), timeout=60, what="the face cluster")
        cid = browser.script("return document.querySelector('[data-kind=face]').dataset.cluster")
        shot(browser, "inbox")
        clicks = 0
        browser.click(f"#name-{cid}")
        browser.type(f"#name-{cid}", "eileen")
        browser.click(f"#consent-{cid}")
        browser.click(f"[data-cluster='{cid}'] button.name")
        clicks = 3
        browser.wait_for(lambda: not browser.finds(f"[data-cluster='{cid}']"), timeout=30, what="named")
        assert clicks <= 3
        with Gallery(gallery) as g:
            assert g.people() == {"eileen": {"face": 1}}
        # the face stage's next recognition (a new camera: a new track) carries the name
        again = play(images.augment(astronaut, "bright"), "hall-cam", 2)
        assert [f.person for f in again] == ["eileen"]
        browser.get(rig.url + "timeline?type=face")
        browser.wait_for(lambda: "eileen" in browser.text("#timeline-body"), what="the named recognition")
        browser.get(rig.url)
        browser.wait_for(
            lambda: (
                "eileen"
                in " ".join(
                    browser.script("return [...document.querySelectorAll('.boxname')].map(e => e.textContent)") or []
                )
            ),
            what="boxed name",
        )
        rig.call(stage.stop())
    finally:
        rig.close()
