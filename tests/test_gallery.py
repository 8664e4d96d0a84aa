"""Identity gallery: private file, per-model embeddings, "unknown" below threshold, integrity checks."""

from __future__ import annotations

import sqlite3
import stat

import numpy as np
import pytest

from models.gallery import UNKNOWN, Gallery, GalleryError


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
