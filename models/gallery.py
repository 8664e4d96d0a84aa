"""The identity gallery: enrolled people with voice and face embeddings, in one SQLite file.

Embeddings are stored per ``kind`` ("voice", "face") and ``model_id`` (the encoder that made them),
so a voice print from Resemblyzer never compares with one from ECAPA. The file holds biometric
data: it is created with mode 0600 and ``check()`` (run when a stage starts) refuses a file other
users can read, and verifies the database and every stored vector.

``identify`` answers "unknown" whenever the best person scores below the threshold: the nearest
enrolled person is never returned for a voice or face that matches nobody well enough.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import numpy as np

UNKNOWN = "unknown"
SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS people (
    name TEXT PRIMARY KEY,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS embeddings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL REFERENCES people(name) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    model_id TEXT NOT NULL,
    dim INTEGER NOT NULL,
    vector BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS embeddings_by_model ON embeddings(kind, model_id);
"""


class GalleryError(RuntimeError):
    """The gallery file is unsafe or damaged; the text says what and how to fix it."""


class Gallery:
    """Enrolled people and their embeddings in an SQLite file (created with mode 0600)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists():
            # Create it private before SQLite opens it, so it is never world-readable, not even briefly.
            os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        self._cache: dict[tuple[str, str], tuple[list[str], np.ndarray]] = {}
        self._version = -1

    # ------------------------------------------------------------------------------------ writes

    def add(self, name: str, kind: str, model_id: str, embedding: np.ndarray) -> None:
        """Store one embedding of ``name`` (the person is created on first use)."""
        name = name.strip()
        if not name or name == UNKNOWN:
            raise ValueError(f"invalid person name {name!r}")
        vec = _check_vector(embedding)
        now = time.time()
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute("INSERT OR IGNORE INTO people(name, created) VALUES (?, ?)", (name, now))
                self._db.execute(
                    "INSERT INTO embeddings(name, kind, model_id, dim, vector, created) VALUES (?, ?, ?, ?, ?, ?)",
                    (name, kind, model_id, len(vec), vec.astype("<f4").tobytes(), now),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._cache.pop((kind, model_id), None)

    def remove_vectors(self, name: str, kind: str, model_id: str, embeddings: list[np.ndarray]) -> int:
        """Delete exactly these stored embeddings of ``name`` (an undone enrolment); the person goes when
        nothing of theirs is left. Returns how many were deleted."""
        blobs = [_check_vector(e).astype("<f4").tobytes() for e in embeddings]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                n = 0
                for b in blobs:
                    row = self._db.execute(
                        "SELECT id FROM embeddings WHERE name = ? AND kind = ? AND model_id = ? AND vector = ? LIMIT 1",
                        (name, kind, model_id, b),
                    ).fetchone()
                    if row is not None:
                        self._db.execute("DELETE FROM embeddings WHERE id = ?", (row[0],))
                        n += 1
                left = self._db.execute("SELECT COUNT(*) FROM embeddings WHERE name = ?", (name,)).fetchone()[0]
                if not left:
                    self._db.execute("DELETE FROM people WHERE name = ?", (name,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._cache.clear()
        return n

    def remove(self, name: str) -> bool:
        """Forget a person and all their embeddings; False if there was no such person."""
        with self._lock:
            cur = self._db.execute("DELETE FROM people WHERE name = ?", (name,))
            self._db.execute("DELETE FROM embeddings WHERE name = ?", (name,))
            self._cache.clear()
        return cur.rowcount > 0

    # ------------------------------------------------------------------------------------- reads

    def people(self) -> dict[str, dict[str, int]]:
        """Each person with their embedding count per kind, e.g. ``{"ana": {"voice": 2, "face": 1}}``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT p.name, e.kind, COUNT(e.id) FROM people p LEFT JOIN embeddings e ON e.name = p.name "
                "GROUP BY p.name, e.kind ORDER BY p.name"
            ).fetchall()
        out: dict[str, dict[str, int]] = {}
        for name, kind, n in rows:
            out.setdefault(name, {})
            if kind is not None:
                out[name][kind] = n
        return out

    def _centroids(self, kind: str, model_id: str) -> tuple[list[str], np.ndarray]:
        key = (kind, model_id)
        # Another process (``sensorium enroll``, the console) may have changed the file: SQLite's
        # data_version moves then, and the next recognition reads the people as they are now.
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._version = version
            self._cache.clear()
        if key not in self._cache:
            with self._lock:
                rows = self._db.execute(
                    "SELECT name, vector FROM embeddings WHERE kind = ? AND model_id = ? ORDER BY name",
                    (kind, model_id),
                ).fetchall()
            by_name: dict[str, list[np.ndarray]] = {}
            for name, blob in rows:
                by_name.setdefault(name, []).append(np.frombuffer(blob, dtype="<f4"))
            names = sorted(by_name)
            # A person's voice print is the mean direction of their enrolled embeddings.
            mat = np.stack([_unit(np.mean(by_name[n], axis=0)) for n in names]) if names else np.zeros((0, 0))
            self._cache[key] = (names, mat.astype(np.float32))
        return self._cache[key]

    def scores(self, kind: str, model_id: str, embedding: np.ndarray) -> dict[str, float]:
        """Cosine similarity of ``embedding`` to every enrolled person (for calibration and tools)."""
        names, mat = self._centroids(kind, model_id)
        if not names:
            return {}
        vec = _check_vector(embedding)
        if vec.shape[0] != mat.shape[1]:
            raise ValueError(f"embedding has {vec.shape[0]} values, gallery {kind}/{model_id} has {mat.shape[1]}")
        return dict(zip(names, (mat @ vec).astype(float).tolist(), strict=True))

    def identify(self, kind: str, model_id: str, embedding: np.ndarray, threshold: float) -> tuple[str, float]:
        """``(name, score)`` of the best match, or ``("unknown", best score)`` below ``threshold``."""
        s = self.scores(kind, model_id, embedding)
        if not s:
            return UNKNOWN, 0.0
        name = max(s, key=lambda n: s[n])
        return (name, s[name]) if s[name] >= threshold else (UNKNOWN, s[name])

    def count(self, kind: str, model_id: str | None = None) -> int:
        """Embeddings stored of ``kind`` (and ``model_id``)."""
        q = "SELECT COUNT(*) FROM embeddings WHERE kind = ?" + (" AND model_id = ?" if model_id else "")
        with self._lock:
            return int(self._db.execute(q, (kind, model_id) if model_id else (kind,)).fetchone()[0])

    # --------------------------------------------------------------------------------- integrity

    def check(self) -> None:
        """Raise ``GalleryError`` if the file is readable by others or its contents are damaged."""
        mode = stat.S_IMODE(self.path.stat().st_mode)
        if mode & 0o077:
            raise GalleryError(
                f"{self.path}: permissions {oct(mode)} let other users read biometric data; run: chmod 600 {self.path}"
            )
        with self._lock:
            ok = self._db.execute("PRAGMA integrity_check").fetchone()[0]
            if ok != "ok":
                raise GalleryError(f"{self.path}: SQLite integrity check failed: {ok}")
            version = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            rows = self._db.execute("SELECT id, name, kind, model_id, dim, vector FROM embeddings").fetchall()
            orphans = self._db.execute(
                "SELECT COUNT(*) FROM embeddings WHERE name NOT IN (SELECT name FROM people)"
            ).fetchone()[0]
        if version is None or int(version[0]) != SCHEMA_VERSION:
            raise GalleryError(f"{self.path}: schema version {version and version[0]}, expected {SCHEMA_VERSION}")
        if orphans:
            raise GalleryError(f"{self.path}: {orphans} embeddings belong to no person")
        dims: dict[tuple[str, str], int] = {}
        for row_id, name, kind, model_id, dim, blob in rows:
            vec = np.frombuffer(blob, dtype="<f4") if len(blob) % 4 == 0 else np.zeros(0)
            where = f"{self.path}: embedding {row_id} ({name}, {kind}, {model_id})"
            if len(vec) != dim or dim == 0:
                raise GalleryError(f"{where}: {len(blob)} bytes do not hold {dim} float32 values")
            if not np.all(np.isfinite(vec)) or abs(float(np.linalg.norm(vec)) - 1.0) > 1e-3:
                raise GalleryError(f"{where}: not a finite unit vector")
            if dims.setdefault((kind, model_id), dim) != dim:
                raise GalleryError(f"{where}: {dim} values, others of this model have {dims[(kind, model_id)]}")

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def _check_vector(embedding: np.ndarray) -> np.ndarray:
    vec = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if vec.size == 0 or not np.all(np.isfinite(vec)):
        raise ValueError("embedding is empty or not finite")
    n = float(np.linalg.norm(vec))
    if n == 0.0:
        raise ValueError("embedding is all zeros")
    return vec / n
