"""What the console keeps: the hub's events (for paging and filtering), samples of unknowns, their clusters.

One SQLite file (``<data_dir>/console/console.db``, mode 0600) and a media folder of face crops and
voice clips (each file 0600, kept ``retention`` seconds, none at all with ``media = False``).

Clusters grow online: a new sample joins the nearest cluster of its kind and model whose centroid is
at least ``threshold`` (the stage's own recognition threshold) similar, else starts one. Ignored
clusters keep absorbing samples (a negative example: the same face is never proposed again); named
ones too (a recognition the gallery missed). Every change the user makes is logged with what it
needs to be undone.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

UNKNOWN = "unknown"


@dataclass
class Cluster:
    """A group of samples of one unknown face or voice."""

    id: int
    kind: str
    model_id: str
    status: str
    """"open" (in the inbox), "named", "ignored" or "merged"."""
    name: str
    samples: list[int] = field(default_factory=list)
    """Sample ids, newest first."""
    media: list[str] = field(default_factory=list)
    """Media files of the newest samples that still have one."""
    rooms: list[str] = field(default_factory=list)
    first: float = 0.0
    last: float = 0.0
    evidence: dict[str, int] = field(default_factory=dict)
    """Known person → samples taken while they were the only known person in the room (cross-modal)."""

    def proposal(self) -> tuple[str, int, int] | None:
        """``(person, samples with them alone in the room, samples)`` when the evidence names one person."""
        if not self.evidence:
            return None
        person = max(self.evidence, key=lambda p: self.evidence[p])
        others = sum(n for p, n in self.evidence.items() if p != person)
        return (person, self.evidence[person], len(self.samples)) if others == 0 else None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS events(
  seq INTEGER PRIMARY KEY, type TEXT, room TEXT, person TEXT, time REAL, json TEXT, sample INTEGER);
CREATE INDEX IF NOT EXISTS events_type ON events(type, seq);
CREATE INDEX IF NOT EXISTS events_room ON events(room, seq);
CREATE INDEX IF NOT EXISTS events_person ON events(person, seq);
CREATE TABLE IF NOT EXISTS clusters(
  id INTEGER PRIMARY KEY, kind TEXT, model_id TEXT, status TEXT, name TEXT, merged_into INTEGER, created REAL);
CREATE TABLE IF NOT EXISTS samples(
  id INTEGER PRIMARY KEY, kind TEXT, model_id TEXT, vector BLOB, time REAL, room TEXT, seq INTEGER,
  media TEXT, cluster INTEGER, alone TEXT, grp TEXT DEFAULT '', person TEXT DEFAULT '');
CREATE INDEX IF NOT EXISTS samples_cluster ON samples(cluster);
CREATE TABLE IF NOT EXISTS actions(id INTEGER PRIMARY KEY, time REAL, action TEXT, payload TEXT, undone INTEGER);
CREATE TABLE IF NOT EXISTS consent(name TEXT, time REAL, detail TEXT);
"""


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).reshape(-1)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


def private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to a new file readable by its owner only (never briefly world-readable)."""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class Store:
    """The console's SQLite file and media folder."""

    def __init__(self, folder: str | Path, *, media: bool = True) -> None:
        self.folder = Path(folder)
        self.media_dir = self.folder / "media"
        self.media_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        os.chmod(self.media_dir, 0o700)
        self.keep_media = media
        path = self.folder / "console.db"
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600))
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        have = {r[1] for r in self._db.execute("PRAGMA table_info(samples)")}
        for col in ("grp", "person"):  # a file from an earlier console
            if col not in have:
                self._db.execute(f"ALTER TABLE samples ADD COLUMN {col} TEXT DEFAULT ''")
        self._db.execute("CREATE INDEX IF NOT EXISTS samples_person ON samples(person)")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---------------------------------------------------------------------------------- events

    @property
    def last_seq(self) -> int:
        row = self._q("SELECT MAX(seq) FROM events")
        return int(row[0][0] or 0)

    def add_events(self, rows: list[tuple[int, str, str, str, float, str]]) -> None:
        """Keep events: ``(seq, type, room, person, time, json)``; a seq already kept is left as it is."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO events(seq, type, room, person, time, json, sample) VALUES (?,?,?,?,?,?,NULL)",
                rows,
            )
            self._db.execute("COMMIT")

    def events(
        self,
        *,
        before: int | None = None,
        room: str = "",
        person: str = "",
        type_: str = "",
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Newest first, older than ``before``, filtered."""
        where, args = [], []
        if before is not None:
            where.append("e.seq < ?")
            args.append(before)
        for col, val in (("room", room), ("person", person), ("type", type_)):
            if val:
                where.append(f"e.{col} = ?")
                args.append(val)
        sql = (
            "SELECT e.seq, e.json, s.media, s.cluster FROM events e LEFT JOIN samples s ON s.id = e.sample"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY e.seq DESC LIMIT ?"
        )
        out = []
        for seq, raw, media, cluster in self._q(sql, (*args, limit)):
            ev = json.loads(raw)
            ev["seq"] = seq
            ev["_media"] = media or ""
            ev["_cluster"] = cluster
            out.append(ev)
        return out

    def facets(self) -> dict[str, list[str]]:
        """Rooms, people and types that occur in the kept events (for the timeline's filters)."""
        return {
            col: [r[0] for r in self._q(f"SELECT DISTINCT {col} FROM events WHERE {col} != '' ORDER BY {col}")]
            for col in ("room", "person", "type")
        }

    def scores(self, person: str, limit: int = 500) -> list[tuple[float, str, float]]:
        """``(time, type, score)`` of this person's face and speaker recognitions, oldest first."""
        rows = self._q(
            "SELECT time, type, json FROM events WHERE person = ? AND type IN ('face', 'speaker') "
            "ORDER BY seq DESC LIMIT ?",
            (person, limit),
        )
        return [(t, ty, float(json.loads(raw).get("score", 0.0))) for t, ty, raw in reversed(rows)]

    # --------------------------------------------------------------------------------- samples

    def add_sample(
        self,
        *,
        kind: str,
        model_id: str,
        vector: np.ndarray,
        time_: float,
        room: str,
        seq: int,
        media: bytes | None,
        suffix: str,
        alone: str,
        threshold: float,
        group: str = "",
        person: str = "",
    ) -> tuple[int, int]:
        """Keep one sample of an unknown, clustered; returns ``(sample id, cluster id)``.

        ``group`` names what the sample was seen with (a face: its camera frame): two faces of one
        frame are two people, so a sample never joins a cluster that holds another of its group.
        """
        vec = _unit(vector)
        # a recognized person's sample is kept for re-assigning, outside the inbox's clusters
        cid = None if person else self._nearest(kind, model_id, vec, threshold, group)
        with self._lock:
            self._db.execute("BEGIN")
            if cid is None and not person:
                cid = int(
                    self._db.execute(
                        "INSERT INTO clusters(kind, model_id, status, name, merged_into, created) "
                        "VALUES (?,?,'open','',NULL,?)",
                        (kind, model_id, time.time()),
                    ).lastrowid
                    or 0
                )
            sid = int(
                self._db.execute(
                    "INSERT INTO samples(kind, model_id, vector, time, room, seq, media, cluster, alone, grp, person) "
                    "VALUES (?,?,?,?,?,?,'',?,?,?,?)",
                    (kind, model_id, vec.astype("<f4").tobytes(), time_, room, seq, cid, alone, group, person),
                ).lastrowid
                or 0
            )
            name = ""
            if media is not None and self.keep_media:
                name = f"{kind}-{sid}.{suffix}"
                private_file(self.media_dir / name, media)
                self._db.execute("UPDATE samples SET media = ? WHERE id = ?", (name, sid))
            self._db.execute("UPDATE events SET sample = ? WHERE seq = ?", (sid, seq))
            self._db.execute("COMMIT")
        return sid, cid or 0

    def recognitions(self, person: str, limit: int = 24) -> list[dict[str, Any]]:
        """The kept samples of ``person``'s recognitions, newest first (for re-assigning a wrong one)."""
        rows = self._q(
            "SELECT s.id, s.kind, s.time, s.room, s.media, e.json FROM samples s LEFT JOIN events e ON e.seq = s.seq "
            "WHERE s.person = ? ORDER BY s.time DESC LIMIT ?",
            (person, limit),
        )
        return [
            {"id": i, "kind": k, "time": t, "room": r, "media": m, "score": json.loads(j or "{}").get("score", 0.0)}
            for i, k, t, r, m, j in rows
        ]

    def sample(self, sid: int) -> tuple[str, str, str, np.ndarray] | None:
        """``(kind, model_id, person, vector)`` of a kept sample."""
        rows = self._q("SELECT kind, model_id, person, vector FROM samples WHERE id = ?", (sid,))
        if not rows:
            return None
        k, m, p, v = rows[0]
        return k, m, p, np.frombuffer(v, dtype="<f4").copy()

    def set_sample_person(self, sid: int, person: str) -> None:
        with self._lock:
            self._db.execute("UPDATE samples SET person = ? WHERE id = ?", (person, sid))

    def _nearest(self, kind: str, model_id: str, vec: np.ndarray, threshold: float, group: str = "") -> int | None:
        best, best_score = None, threshold
        apart = {r[0] for r in self._q("SELECT cluster FROM samples WHERE grp = ?", (group,))} if group else set()
        for cid, vectors in self._cluster_vectors(kind, model_id).items():
            if cid in apart:
                continue
            c = _unit(np.mean(vectors, axis=0))
            s = float(c @ vec) if c.shape == vec.shape else -1.0
            if s >= best_score:
                best, best_score = cid, s
        return best

    def _cluster_vectors(self, kind: str, model_id: str) -> dict[int, list[np.ndarray]]:
        rows = self._q(
            "SELECT s.cluster, s.vector FROM samples s JOIN clusters c ON c.id = s.cluster "
            "WHERE s.kind = ? AND s.model_id = ? AND c.status != 'merged'",
            (kind, model_id),
        )
        out: dict[int, list[np.ndarray]] = {}
        for cid, blob in rows:
            out.setdefault(cid, []).append(np.frombuffer(blob, dtype="<f4"))
        return out

    def similar(self, cid: int, floor: float) -> list[tuple[int, float]]:
        """Open clusters of ``cid``'s kind and model whose centroid is at least ``floor`` similar to its
        centroid and that share no frame with it, most similar first."""
        c = self.cluster(cid)
        if c is None:
            return []
        vectors = self._cluster_vectors(c.kind, c.model_id)
        if cid not in vectors:
            return []
        mine = _unit(np.mean(vectors[cid], axis=0))
        groups = {r[0] for r in self._q("SELECT grp FROM samples WHERE cluster = ? AND grp != ''", (cid,))}
        apart = {
            r[0]
            for g in groups
            for r in self._q("SELECT cluster FROM samples WHERE grp = ? AND cluster != ?", (g, cid))
        }
        status = dict(self._q("SELECT id, status FROM clusters"))
        out = []
        for other, vs in vectors.items():
            if other == cid or other in apart or status.get(other) != "open":
                continue
            sim = float(_unit(np.mean(vs, axis=0)) @ mine)
            if sim >= floor:
                out.append((other, sim))
        return sorted(out, key=lambda x: -x[1])

    def cluster(self, cid: int) -> Cluster | None:
        rows = self._q("SELECT id, kind, model_id, status, name FROM clusters WHERE id = ?", (cid,))
        if not rows:
            return None
        c = Cluster(*rows[0])
        for sid, media, room, t, alone in self._q(
            "SELECT id, media, room, time, alone FROM samples WHERE cluster = ? ORDER BY time DESC", (cid,)
        ):
            c.samples.append(sid)
            if media and len(c.media) < 6:
                c.media.append(media)
            if room and room not in c.rooms:
                c.rooms.append(room)
            c.first = t if not c.first else min(c.first, t)
            c.last = max(c.last, t)
            if alone:
                c.evidence[alone] = c.evidence.get(alone, 0) + 1
        return c

    def clusters(self, status: str = "open") -> list[Cluster]:
        ids = [r[0] for r in self._q("SELECT id FROM clusters WHERE status = ? ORDER BY id", (status,))]
        out = [c for c in (self.cluster(i) for i in ids) if c is not None and c.samples]
        out.sort(key=lambda c: -c.last)
        return out

    def sample_events(self, cid: int) -> list[dict[str, Any]]:
        """The events (as kept) behind a cluster's samples."""
        rows = self._q(
            "SELECT e.json FROM samples s JOIN events e ON e.seq = s.seq WHERE s.cluster = ? ORDER BY s.id", (cid,)
        )
        return [json.loads(r[0]) for r in rows]

    def vectors(self, cid: int) -> list[np.ndarray]:
        return [
            np.frombuffer(b, dtype="<f4").copy()
            for (b,) in self._q("SELECT vector FROM samples WHERE cluster = ?", (cid,))
        ]

    def media_path(self, name: str) -> Path | None:
        """A kept media file by name (only names this store made)."""
        if (
            not name
            or "/" in name
            or name.startswith(".")
            or not self._q("SELECT 1 FROM samples WHERE media = ?", (name,))
        ):
            return None
        p = self.media_dir / name
        return p if p.is_file() else None

    # ---------------------------------------------------------------------------------- actions

    def set_status(self, cid: int, status: str, name: str = "") -> None:
        with self._lock:
            self._db.execute("UPDATE clusters SET status = ?, name = ? WHERE id = ?", (status, name, cid))

    def merge(self, src: int, dst: int) -> list[int]:
        """Move ``src``'s samples into ``dst``; returns the moved sample ids (for undo)."""
        moved = [r[0] for r in self._q("SELECT id FROM samples WHERE cluster = ?", (src,))]
        with self._lock:
            self._db.execute("BEGIN")
            self._db.execute("UPDATE samples SET cluster = ? WHERE cluster = ?", (dst, src))
            self._db.execute("UPDATE clusters SET status = 'merged', merged_into = ? WHERE id = ?", (dst, src))
            self._db.execute("COMMIT")
        return moved

    def unmerge(self, src: int, moved: list[int]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("UPDATE samples SET cluster = ? WHERE id = ?", [(src, s) for s in moved])
            self._db.execute("UPDATE clusters SET status = 'open', merged_into = NULL WHERE id = ?", (src,))
            self._db.execute("COMMIT")

    def log_action(self, action: str, payload: dict[str, Any]) -> int:
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO actions(time, action, payload, undone) VALUES (?,?,?,0)",
                (time.time(), action, json.dumps(payload)),
            )
        return int(cur.lastrowid or 0)

    def last_action(self) -> tuple[int, str, dict[str, Any]] | None:
        rows = self._q("SELECT id, action, payload FROM actions WHERE undone = 0 ORDER BY id DESC LIMIT 1")
        return (rows[0][0], rows[0][1], json.loads(rows[0][2])) if rows else None

    def mark_undone(self, aid: int) -> None:
        with self._lock:
            self._db.execute("UPDATE actions SET undone = 1 WHERE id = ?", (aid,))

    def record_consent(self, name: str, detail: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO consent(name, time, detail) VALUES (?,?,?)", (name, time.time(), detail))

    def consents(self, name: str) -> list[tuple[float, str]]:
        return [(t, d) for t, d in self._q("SELECT time, detail FROM consent WHERE name = ? ORDER BY time", (name,))]

    def forget_person(self, name: str) -> int:
        """Drop everything kept about ``name``: named clusters, their samples and media, consent, mirrored events."""
        cids = [r[0] for r in self._q("SELECT id FROM clusters WHERE name = ?", (name,))]
        media = [
            r[0] for cid in cids for r in self._q("SELECT media FROM samples WHERE cluster = ? AND media != ''", (cid,))
        ]
        with self._lock:
            self._db.execute("BEGIN")
            for cid in cids:
                self._db.execute("DELETE FROM samples WHERE cluster = ?", (cid,))
                self._db.execute("DELETE FROM clusters WHERE id = ?", (cid,))
            self._db.execute("UPDATE samples SET alone = '' WHERE alone = ?", (name,))
            media += [
                r[0] for r in self._db.execute("SELECT media FROM samples WHERE person = ? AND media != ''", (name,))
            ]
            self._db.execute("DELETE FROM samples WHERE person = ?", (name,))
            self._db.execute("DELETE FROM consent WHERE name = ?", (name,))
            n = self._db.execute("DELETE FROM events WHERE person = ?", (name,)).rowcount
            self._db.execute("COMMIT")
        for m in media:
            (self.media_dir / m).unlink(missing_ok=True)
        return n

    def expire_media(self, older_than: float) -> int:
        """Delete crops and clips of samples taken before ``older_than`` (their embeddings stay)."""
        rows = self._q("SELECT id, media FROM samples WHERE media != '' AND time < ?", (older_than,))
        for _, m in rows:
            (self.media_dir / m).unlink(missing_ok=True)
        with self._lock:
            self._db.executemany("UPDATE samples SET media = '' WHERE id = ?", [(sid,) for sid, _ in rows])
        return len(rows)
