"""Identity gallery: private file, per-model embeddings, "unknown" below threshold, integrity checks."""

from __future__ import annotations

import asyncio
import logging
import re
import shlex
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from sensorium.models.gallery import UNKNOWN, Gallery, GalleryError


def vec(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float32)


def test_file_is_created_private(tmp_path) -> None:
    path = tmp_path / "sub" / "gallery.db"
    with Gallery(path) as g:
        g.add("ana", "voice", "m1", vec(1, 0, 0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_identify_names_the_best_match_and_unknown_below_threshold(tmp_path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.add("ana", "voice", "m1", vec(1, 0, 0))
        g.add("ana", "voice", "m1", vec(0.9, 0.1, 0))
        g.add("bo", "voice", "m1", vec(0, 1, 0))
        name, score = g.identify("voice", "m1", vec(0.95, 0.2, 0.1), threshold=0.8)
        assert name == "ana" and score > 0.9
        # Closest to bo, but not close enough: unknown, never the nearest person.
        name, score = g.identify("voice", "m1", vec(0.3, 0.6, 0.74), threshold=0.8)
        assert name == UNKNOWN and 0.5 < score < 0.8
        assert g.identify("voice", "other-model", vec(1, 0, 0), 0.5) == (UNKNOWN, 0.0)
        assert g.identify("face", "m1", vec(1, 0, 0), 0.5) == (UNKNOWN, 0.0)
        with pytest.raises(ValueError, match="has 2 values, gallery voice/m1 has 3"):
            g.identify("voice", "m1", vec(1, 0), 0.5)


def test_voice_and_face_per_person_list_and_remove(tmp_path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add("ana", "voice", "resemblyzer", vec(1, 0))
        g.add("ana", "face", "facenet", vec(0, 1, 0, 0))
        g.add("bo", "face", "facenet", vec(1, 0, 0, 0))
        assert g.people() == {"ana": {"voice": 1, "face": 1}, "bo": {"face": 1}}
    with Gallery(path) as g:  # persisted
        assert g.identify("face", "facenet", vec(0, 1, 0, 0), 0.9)[0] == "ana"
        assert g.remove("ana") and not g.remove("ana")
        assert g.people() == {"bo": {"face": 1}}
        assert g.identify("face", "facenet", vec(0, 1, 0, 0), 0.9)[0] == UNKNOWN
        g.check()


def test_rejects_bad_names_and_vectors(tmp_path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        for name in ("", "unknown", "  "):
            with pytest.raises(ValueError):
                g.add(name, "voice", "m", vec(1, 0))
        with pytest.raises(ValueError):
            g.add("ana", "voice", "m", vec(0, 0))
        with pytest.raises(ValueError):
            g.add("ana", "voice", "m", vec(np.nan, 1))
        assert g.people() == {}


def test_check_refuses_readable_file_and_damaged_rows(tmp_path) -> None:
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add("ana", "voice", "m", vec(1, 0))
        g.check()
        path.chmod(0o644)
        with pytest.raises(GalleryError, match="chmod 600"):
            g.check()
        path.chmod(0o600)
    db = sqlite3.connect(path)
    db.execute("UPDATE embeddings SET vector = ? WHERE name = 'ana'", (b"\x00\x00\x80\x7f" * 2,))  # inf
    db.commit()
    db.close()
    with Gallery(path) as g, pytest.raises(GalleryError, match="not a finite unit vector"):
        g.check()
    db = sqlite3.connect(path)
    db.execute("UPDATE embeddings SET vector = ? WHERE name = 'ana'", (b"\x00" * 7,))
    db.commit()
    db.close()
    with Gallery(path) as g, pytest.raises(GalleryError, match="do not hold 2 float32"):
        g.check()
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(sqlite3.DatabaseError):
        Gallery(path).check()


# ------------------------------------------------------------------- one gallery: enroll, worker, demo, hints

ROOT = Path(__file__).resolve().parent.parent


def _deploy(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "deploy.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            data_dir = "{tmp_path / "data"}"
            [hub]
            address = "tcp://127.0.0.1:17950"
            [rooms.kitchen]
            [edges.kitchen-pi]
            room = "kitchen"
            [workers.box]
            device = "cpu"
            stages = ["speaker", "face"]
            """
        )
        + textwrap.dedent(extra)
    )
    return config


def _enroll(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sensorium", "enroll", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_a_deployment_says_where_its_people_are_and_how_to_enrol_them(tmp_path: Path) -> None:
    from sensorium.deployment import load_deployment
    from sensorium.enrollment import DEFAULT_GALLERY, deployment_galleries, enroll_command

    plain = deployment_galleries(load_deployment(_deploy(tmp_path), check_graph=False))
    assert plain.voice == plain.face == tmp_path / "data" / "gallery.db"
    apart = _deploy(
        tmp_path, f'[stages.face]\ngallery = "{tmp_path / "faces.db"}"\n[stages.speaker]\nmodel = "ecapa"\n'
    )
    split = deployment_galleries(load_deployment(apart, check_graph=False))
    assert split.voice == tmp_path / "data" / "gallery.db" and split.face == tmp_path / "faces.db"
    assert split.speaker_model == "ecapa"
    assert enroll_command(config="deploy.toml") == "sensorium enroll NAME --voice FILE.wav --config deploy.toml"
    assert enroll_command("face", gallery=DEFAULT_GALLERY) == "sensorium enroll NAME --face PHOTO.jpg"
    assert enroll_command(gallery="/g.db", model="ecapa") == (
        "sensorium enroll NAME --voice FILE.wav --gallery /g.db --speaker-model ecapa"
    )


@pytest.mark.slow
def test_enroll_with_config_fills_the_galleries_the_deployment_reads(tmp_path: Path) -> None:
    """Voices into the speaker stage's gallery, the face into the face stage's, each model loaded once."""
    import images
    import media

    config = _deploy(tmp_path, f'[stages.face]\ngallery = "{tmp_path / "faces.db"}"\n')
    wavs = [str(media.speech_wav(t, "piper:joe")) for t in ("the quick brown fox", "jumps over the lazy dog")]
    r = _enroll("joe", "--voice", *wavs, "--face", str(images.TOM_HANKS), "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("loading speaker model resemblyzer") == 1 and r.stderr.count("loading face models") == 1
    with Gallery(tmp_path / "data" / "gallery.db") as g:
        assert g.people() == {"joe": {"voice": 2}}
    with Gallery(tmp_path / "faces.db") as g:
        assert g.people() == {"joe": {"face": 1}}
    listed = _enroll("--list", "--config", str(config))
    assert listed.stdout.count("joe: ") == 2, listed.stdout


@pytest.mark.slow
def test_demo_enrolment_loads_each_model_once_for_everyone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import media

    from sensorium.evaluation.demo import enroll_pairs

    pairs = [
        f"{name}={media.speech_wav(text, voice)}"
        for name, voice in (("joe", "piper:joe"), ("sally", "flite:slt"))
        for text in ("the quick brown fox", "jumps over the lazy dog")
    ]
    assert enroll_pairs(pairs, tmp_path / "g.db") == 0
    err = capsys.readouterr().err
    assert err.count("loading speaker model") == 1, err
    with Gallery(tmp_path / "g.db") as g:
        assert g.people() == {"joe": {"voice": 2}, "sally": {"voice": 2}}


@pytest.mark.slow
async def test_the_workers_hint_is_a_command_that_makes_the_person_known(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker with nobody enrolled names the exact command; run as printed, the worker's stage knows joe."""
    import media

    from sensorium.deployment import load_deployment
    from sensorium.embedded import embedded
    from sensorium.pipeline.messages import SpeakerIdentified, Utterance

    dep = load_deployment(_deploy(tmp_path), check_graph=False)

    async def who(pcm: np.ndarray) -> str:
        from sensorium.pipeline.bus import Publisher, Subscriber

        async with embedded(dep) as env:
            pub, sub = Publisher(env.endpoints), Subscriber(env.endpoints, ["speaker/"])
            try:
                await asyncio.sleep(0.3)
                await pub.publish(
                    Utterance(
                        time=env.clock.now(), room="kitchen", utterance_id="u1", t1=env.clock.now(), data=pcm.tobytes()
                    )
                )
                async with asyncio.timeout(60):
                    msg = await sub.recv()
                assert isinstance(msg, SpeakerIdentified)
                return msg.person
            finally:
                pub.close()
                sub.close()

    said = media.speech("please remind me to buy milk tomorrow morning", "piper:joe")
    with caplog.at_level(logging.WARNING):
        assert await who(said) == "unknown"
    hint = next(r.getMessage() for r in caplog.records if "no voices enrolled" in r.getMessage())
    command = re.search(r"enrol: (sensorium enroll NAME .*?), or --config", hint)
    assert command, hint
    wav = media.speech_wav("the quick brown fox jumps over the lazy dog", "piper:joe")
    args = shlex.split(command.group(1).replace("NAME", "joe").replace("FILE.wav", str(wav)))[2:]
    assert _enroll(*args).returncode == 0
    assert await who(said) == "joe"
