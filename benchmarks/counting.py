"""Counting benchmark: is each person counted once? Labelled real photos, clips made of them, empty scenes.

The labelled set comes from photos shipped in installed packages, with the true number of people:
ultralytics' ``bus.jpg`` (4, one of them cut by the left edge) and ``zidane.jpg`` (2), insightface's
``t1.jpg`` (6, a group round a table, bodies overlapping) and ``Tom_Hanks_54745.png`` (1, a face),
scikit-image's ``astronaut`` (1) and ``camera`` (1, the cameraman), and two crops of ``bus.jpg`` with
one man each. Each photo is put in a 640×480 camera frame (over scikit-image's garage photo, the
room of ``benchmarks/vision_media.py``) and played at 5 fps with sensor noise:

* **still** (5 s), **panning** (5 s: the camera sweeps across a larger view of the photo);
* **enter/leave** (single-person photos, 7 s): the photo slides in from the right, stays, slides out
  to the left; frames where the person is partly in view are not scored;
* **empty scenes**: 10 minutes (simulated time at 5 fps) of scenes without people — the garage, the
  top of ``bus.jpg`` above the people's heads, ``bus.jpg`` and ``zidane.jpg`` with the people
  inpainted out (OpenCV), and packaged photos of a cat, a coffee, a rocket, a flower and a palace.

Four counters, side by side in one run, on the same weights (the bundled person model):

* **anchor**: ultralytics' own ``YOLO.predict`` (its defaults: conf 0.25, NMS IoU 0.7, the person
  classes ``Normal`` and ``Fall``), every frame on its own — what the library itself counts;
* **original**: the detect stage before counting was worked on — score floor 0.25, no suppression of
  boxes inside another, every box counted (``Detections.persons`` = boxes) — through
  ``models.regions`` (motion regions, tracking) with the same settings;
* **before**: confirmed tracks (boxes inside another suppressed, a track counted once found in
  ``confirm_frames`` frames and held through short misses), without the four changes below;
* **after**: the detect stage's defaults — as *before*, plus the tracker's IoU limits for 5 fps
  (``models.detector.TRACKER``), ByteTrack's low-score association for
  counted tracks (``Settings.low_conf``), a part of a still or region-cut person keeping their whole
  box (``keep_whole``), and a whole frame where nobody was found at 640 looked at again at 320
  (``small_retry``).

Per set (single: frames with one person; multi: frames with several; empty: frames with nobody):
exact-count rate, mean absolute error and count recall (people found, at most the true number, over
the true number); "settled" rows leave out the frames where the truth changed in the last two frames
(a clip's first two frames, a person just fully in view): the confirmation a track needs before it
counts (``confirm_frames`` 2 at 5 fps: 0.2-0.4 s) misses those by design. The empty scenes also report
the most people counted at once. A calibration part
sweeps the score floor and containment ratio on the photos themselves (each detected once, at 640 px).

Run: ``.venv/bin/python -m benchmarks.counting [--quick] [--out FILE]``; ``python -m benchmarks
--only counting`` writes ``benchmarks/results/counting.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import vision_media
from benchmarks.outfile import add_out, checkpoint, run_and_report

RESULTS = Path(__file__).resolve().parent / "results" / "counting.json"
FPS = 5.0
WIDTH, HEIGHT = 640, 480
COUNTERS = ("anchor", "original", "before", "after")
log = logging.getLogger("bench.counting")


# ------------------------------------------------------------------------------------------ media


@dataclass(frozen=True)
class Photo:
    name: str
    package: str
    path: str
    people: int
    crop: tuple[int, int, int, int] | None = None
    """x1, y1, x2, y2 of the part used (None: all of it)."""


PHOTOS = (
    Photo("bus", "ultralytics", "assets/bus.jpg", 4),
    Photo("zidane", "ultralytics", "assets/zidane.jpg", 2),
    Photo("t1", "insightface", "data/images/t1.jpg", 6),
    Photo("tom_hanks", "insightface", "data/images/Tom_Hanks_54745.png", 1),
    Photo("astronaut", "skimage", "data/astronaut.png", 1),
    Photo("cameraman", "skimage", "data/camera.png", 1),
    Photo("bus_walker", "ultralytics", "assets/bus.jpg", 1, (222, 300, 560, 1000)),
    Photo("bus_right", "ultralytics", "assets/bus.jpg", 1, (590, 300, 810, 1000)),
)
#: People boxes (x1, y1, x2, y2) of ``bus.jpg``, for the copy with the people inpainted out. (In
#: ``zidane.jpg`` the two men fill the photo: nothing would be left to inpaint from.)
BUS_PEOPLE = [(0, 370, 360, 915), (670, 330, 810, 900)]
EMPTY = (
    ("garage", "skimage", "data/motorcycle_left.png", None),
    ("bus_top", "ultralytics", "assets/bus.jpg", (0, 0, 810, 330)),
    ("bus_inpainted", "ultralytics", "assets/bus.jpg", "inpaint"),
    ("coffee", "skimage", "data/coffee.png", None),
    ("rocket", "skimage", "data/rocket.jpg", None),
    ("palace", "sklearn", "datasets/images/china.jpg", None),
)
#: Scenes without people but with a thing the bundled model takes for one (a cat's face filling the
#: photo, a flower close up): reported as their own set, "objects" (1 minute each).
OBJECTS = (
    ("cat", "skimage", "data/chelsea.png", None),
    ("flower", "sklearn", "datasets/images/flower.jpg", None),
)


@dataclass
class Clip:
    name: str
    kind: str
    """"still", "pan", "enter-leave" or "empty"."""
    frames: list[bytes]
    truth: list[int | None]
    """True count per frame (None: not scored)."""
    photo: str


def _read(package: str, rel: str, crop: Any = None) -> np.ndarray:
    import cv2

    img = vision_media._read(vision_media._pkg(package, rel))
    if isinstance(crop, tuple):
        x1, y1, x2, y2 = crop
        img = np.ascontiguousarray(img[y1:y2, x1:x2])
    elif crop == "inpaint":
        mask = np.zeros(img.shape[:2], np.uint8)
        for x1, y1, x2, y2 in BUS_PEOPLE:
            mask[y1:y2, x1:x2] = 255
        small = cv2.resize(img, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask, (small.shape[1], small.shape[0]), interpolation=cv2.INTER_NEAREST)
        filled = cv2.resize(cv2.inpaint(small, small_mask, 5, cv2.INPAINT_TELEA), (img.shape[1], img.shape[0]))
        img = np.where(mask[..., None] > 0, filled, img)
    return img


def _fit(img: np.ndarray, w: int, h: int) -> np.ndarray:
    import cv2

    s = min(w / img.shape[1], h / img.shape[0])
    return cv2.resize(
        img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))), interpolation=cv2.INTER_AREA
    )


def _canvas(img: np.ndarray, w: int, h: int, share: float = 1.0) -> np.ndarray:
    """``img`` fitted into ``share`` of a ``w``×``h`` view of the garage (the room), centred."""
    import cv2

    room = cv2.resize(vision_media.room(), (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    fit = _fit(img, round(w * share), round(h * share))
    y, x = (h - fit.shape[0]) // 2, (w - fit.shape[1]) // 2
    room[y : y + fit.shape[0], x : x + fit.shape[1]] = fit
    return room


def _jpeg(frame: np.ndarray, i: int, t: float) -> bytes:
    import cv2

    f = frame.astype(np.float32) * (1.0 + 0.02 * np.sin(2 * np.pi * t / 20.0))
    f += np.random.default_rng(i).normal(0.0, 2.5, f.shape).astype(np.float32)
    return cv2.imencode(".jpg", np.clip(f, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def clips(seconds: float = 5.0, empty_seconds: float = 600.0) -> Iterator[Clip]:
    """Every clip of the set (built on the fly, deterministic)."""
    n = round(seconds * FPS)
    for p in PHOTOS:
        img = _read(p.package, p.path, p.crop)
        still = _canvas(img, WIDTH, HEIGHT)
        yield Clip(p.name, "still", [_jpeg(still, i, i / FPS) for i in range(n)], [p.people] * n, p.name)
        # Panning: a 640×480 window sweeps across a 1.3× view of the room with the photo in its middle 70 %
        # (the photo stays whole in view: the same people all along).
        big = _canvas(img, round(WIDTH * 1.3), round(HEIGHT * 1.3), share=0.7)
        xs = np.linspace(0, big.shape[1] - WIDTH, n).round().astype(int)
        y0 = (big.shape[0] - HEIGHT) // 2
        pan = [_jpeg(big[y0 : y0 + HEIGHT, x : x + WIDTH], i, i / FPS) for i, x in enumerate(xs)]
        yield Clip(p.name, "pan", pan, [p.people] * n, p.name)
        if p.people != 1:
            continue
        # Enter and leave: the photo (fitted to 400 px high) slides in from the right, stays, slides out left.
        person = _fit(img, WIDTH, 400)
        pw = person.shape[1]
        room = vision_media.room().astype(np.float32)
        xs_ = [
            *np.linspace(WIDTH, (WIDTH - pw) // 2, 10),
            *[(WIDTH - pw) / 2] * 15,
            *np.linspace((WIDTH - pw) / 2, -pw, 10),
        ]
        frames, truth = [], []
        for i, x in enumerate(xs_):
            f = room.copy()
            x = round(x)
            a, b = max(0, x), min(WIDTH, x + pw)
            if a < b:
                f[40 : 40 + person.shape[0], a:b] = person[:, a - x : b - x]
            shown = max(0, b - a) / pw
            truth.append(1 if shown >= 0.9 else 0 if shown == 0 else None)
            frames.append(_jpeg(f, i, i / FPS))
        yield Clip(p.name, "enter-leave", frames, truth, p.name)
    per = max(1, round(empty_seconds * FPS / len(EMPTY)))
    for kind, scenes, frames in (("empty", EMPTY, per), ("objects", OBJECTS, round(min(60.0, empty_seconds) * FPS))):
        for name, package, rel, crop in scenes:
            try:
                img = _read(package, rel, crop)
            except FileNotFoundError:
                continue
            scene = _canvas(img, WIDTH, HEIGHT)
            yield Clip(name, kind, [_jpeg(scene, i, i / FPS) for i in range(frames)], [0] * frames, name)


# --------------------------------------------------------------------------------------- counters


def anchor_counter() -> Callable[[list[bytes]], list[int]]:
    """ultralytics' own predict on the bundled weights, frame by frame (its defaults)."""
    import cv2
    from ultralytics import YOLO

    from sensorium.models.detector import DEFAULT_CLASS_MAP, bundled_weights

    model = YOLO(str(bundled_weights()))
    person = [i for i, n in model.names.items() if DEFAULT_CLASS_MAP.get(n) == "person"]

    def count(jpegs: list[bytes]) -> list[int]:
        imgs = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
        return [len(r.boxes) for r in model.predict(imgs, classes=person, verbose=False, device="cpu")]

    return count


def stage_counter(which: str, precision: str = "auto") -> Callable[[list[bytes]], list[int]]:
    """``models.regions`` as the detect stage runs it: "after" (today's defaults), "before" or "original"."""
    from sensorium.models.detector import PersonDetector, default_cache_dir
    from sensorium.models.regions import FrameIn, RegionDetector, Settings

    before = which == "original"
    kw: dict[str, Any] = {"backend": "auto", "cache_dir": default_cache_dir(), "precision": precision}
    if before:
        det = PersonDetector(conf=0.25, contain=0.0, tracker_settings={}, **kw)
        settings = Settings(
            confirm_frames=1,
            hold_missed=False,
            contain=0.0,
            cover_full=False,
            low_conf=0.0,
            keep_whole=False,
            small_retry=False,
        )
    elif which == "before":
        det = PersonDetector(tracker_settings={"fuse_score": False}, **kw)
        settings = Settings(low_conf=0.0, keep_whole=False, small_retry=False)
    else:
        det = PersonDetector(**kw)
        settings = Settings()
    det.warm_up((640, 320))
    calls = {"n": 0}

    def count(jpegs: list[bytes]) -> list[int]:
        calls["n"] += 1
        rd = RegionDetector(det, settings)
        cam = f"clip{calls['n']}"
        out = [rd.process([FrameIn(cam, j, 100.0 + i / FPS, WIDTH, HEIGHT)])[0] for i, j in enumerate(jpegs)]
        det.reset(cam)
        # Before: Detections.persons was every box; now: the confirmed tracks.
        return [len(o.boxes) if before else o.people for o in out]

    count.backend = ", ".join(det.backend(n).describe() for n in (640, 320))  # type: ignore[attr-defined]
    return count


# ------------------------------------------------------------------------------------------ scoring


def _score(pairs: list[tuple[int, int]]) -> dict[str, Any]:
    """(counted, true) per frame → exact rate, MAE, count recall, most counted."""
    if not pairs:
        return {}
    got = np.array([g for g, _ in pairs], float)
    want = np.array([w for _, w in pairs], float)
    out: dict[str, Any] = {
        "frames": len(pairs),
        "exact": round(float(np.mean(got == want)), 4),
        "mae": round(float(np.mean(np.abs(got - want))), 4),
        "max_counted": int(got.max()),
    }
    if want.sum() > 0:
        out["recall"] = round(float(np.minimum(got, want).sum() / want.sum()), 4)
    else:
        out["frames_with_people"] = int((got > 0).sum())
    return out


def _set_of(truth: int) -> str:
    return "empty" if truth == 0 else "single" if truth == 1 else "multi"


def calibrate() -> list[dict[str, Any]]:
    """Score floor × containment ratio on the photos themselves (one 640 px detection each): exact, MAE."""
    from sensorium.models.detector import PersonDetector, default_cache_dir

    det = PersonDetector(backend="auto", conf=0.05, contain=0.0, cache_dir=default_cache_dir())
    photos = [(p, _read(p.package, p.path, p.crop)) for p in PHOTOS]
    empties = [_read(pkg, rel, crop) for _, pkg, rel, crop in EMPTY]
    raw = [det.detect([img])[0] for _, img in photos]
    raw_empty = [det.detect([img])[0] for img in empties]  # rooms without people (not the OBJECTS)
    from sensorium.models.yolo import suppress_contained

    rows = []
    for conf in (0.25, 0.3, 0.35, 0.4, 0.45):
        for contain in (0.0, 0.7, 0.8, 0.9):

            def n(boxes: list[Any], conf: float = conf, contain: float = contain) -> int:
                b = [x for x in boxes if x.score > conf]
                if not b:
                    return 0
                arr = np.array([x.xyxy for x in b], np.float32)
                return len(suppress_contained(arr, np.array([x.score for x in b], np.float32), contain))

            counts = [n(b) for b in raw]
            single = [c == p.people for (p, _), c in zip(photos, counts, strict=True) if p.people == 1]
            multi = [abs(c - p.people) for (p, _), c in zip(photos, counts, strict=True) if p.people > 1]
            rows.append(
                {
                    "conf": conf,
                    "contain": contain,
                    "counts": {p.name: c for (p, _), c in zip(photos, counts, strict=True)},
                    "single_exact": round(sum(single) / len(single), 3),
                    "multi_mae": round(sum(multi) / len(multi), 3),
                    "empty_people": sum(n(b) for b in raw_empty),
                    "recall": round(
                        sum(min(c, p.people) for (p, _), c in zip(photos, counts, strict=True))
                        / sum(p.people for p, _ in photos),
                        3,
                    ),
                }
            )
    return rows


def _check_counters(only: tuple[str, ...]) -> None:
    if not only or any(c not in COUNTERS for c in only):
        raise ValueError(f"counters: expected some of {','.join(COUNTERS)}, got {','.join(only)!r}")


def run(quick: bool = False, only: tuple[str, ...] = COUNTERS, precision: str = "auto") -> dict[str, Any]:
    """The counting table (anchor, before, now; or the counters in ``only``) and the calibration sweep; the
    stage's counters with the detector's ``precision`` ("auto", "f32" or "int8")."""
    load0 = os.getloadavg()[0]
    empty_seconds = 60.0 if quick else 600.0
    _check_counters(only)
    counters = {c: anchor_counter() if c == "anchor" else stage_counter(c, precision) for c in COUNTERS if c in only}
    per_frame: dict[str, list[tuple[str, str, int | None, int, bool]]] = {c: [] for c in counters}
    seconds: dict[str, float] = dict.fromkeys(counters, 0.0)
    clip_rows = []
    for clip in clips(empty_seconds=empty_seconds):
        row: dict[str, Any] = {"clip": clip.name, "kind": clip.kind, "frames": len(clip.frames)}
        for name, count in counters.items():
            t0 = time.perf_counter()
            if name == "anchor" and clip.kind in ("empty", "objects"):
                # A still empty scene: every 25th frame (the frames differ only by sensor noise).
                idx = list(range(0, len(clip.frames), 25))
                got = dict(zip(idx, count([clip.frames[i] for i in idx]), strict=True))
            else:
                got = dict(enumerate(count(clip.frames)))
            seconds[name] += time.perf_counter() - t0
            for i, g in got.items():
                settled = i >= 2 and clip.truth[i - 2] == clip.truth[i - 1] == clip.truth[i]
                per_frame[name].append((clip.kind, clip.name, clip.truth[i], g, settled))
            scored = [(g, clip.truth[i]) for i, g in got.items() if clip.truth[i] is not None]
            row[name] = _score(scored)  # type: ignore[arg-type]
        clip_rows.append(row)
        checkpoint({"fps": FPS, "quick": quick, "clips": clip_rows, "load_at_start": round(load0, 2)})
        log.info(
            "  %s/%s: %s",
            clip.name,
            clip.kind,
            ", ".join(f"{c} exact {row[c].get('exact')} mae {row[c].get('mae')}" for c in counters),
        )
    table: dict[str, dict[str, Any]] = {}
    for name, rows in per_frame.items():
        sets: dict[str, list[tuple[int, int]]] = {}
        for kind, _, truth, got, settled in rows:
            if truth is None:
                continue
            sets.setdefault("objects" if kind == "objects" else _set_of(truth), []).append((got, truth))
            if settled and kind != "objects":
                sets.setdefault(f"{_set_of(truth)}_settled", []).append((got, truth))
            sets.setdefault(f"kind:{kind}", []).append((got, truth))
        table[name] = {k: _score(v) for k, v in sorted(sets.items())}
    last = list(counters)[-1]
    empty_frames = sum(1 for kind, *_ in per_frame[last] if kind == "empty")
    results = {
        "fps": FPS,
        "quick": quick,
        "counters": list(counters),
        "runs_on": getattr(counters[last], "backend", "ultralytics predict (PyTorch)"),
        "precision": precision,
        "openvino_precision_env": os.environ.get("SENSORIUM_OPENVINO_PRECISION", ""),
        "empty_scene_seconds": round(empty_frames / FPS, 1),
        "table": table,
        "clips": clip_rows,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "calibration": calibrate() if only == COUNTERS else [],
        "load_at_start": round(load0, 2),
        "load_at_end": round(os.getloadavg()[0], 2),
        "notes": [
            "anchor: ultralytics YOLO.predict frame by frame (no tracking); on the empty scenes every 25th frame",
            "recall: people counted (at most the true number) over the true number, per frame",
        ],
    }
    return results


def render(results: dict[str, Any]) -> str:
    """The counting table as Markdown."""
    names = results.get("counters", COUNTERS)
    lines = [
        f"Counting on labelled packaged photos and clips made of them at {results['fps']:g} fps "
        f"(detector {results['runs_on']}; {results['empty_scene_seconds']:g} s of empty scenes; load "
        f"{results['load_at_start']} at start, {results['load_at_end']} at end)"
        f"{' — quick run' if results.get('quick') else ''}",
        "",
        "| counter | one person: exact / MAE / recall | several: exact / MAE / recall "
        "| empty rooms: frames with people / most counted | cat, flower: frames with people |",
        "|---|---|---|---|---|",
    ]
    for name in names:
        t = results["table"][name]
        s, m, e, o = t.get("single", {}), t.get("multi", {}), t.get("empty", {}), t.get("objects", {})
        lines.append(
            f"| {name} | {s.get('exact', 0):.1%} / {s.get('mae', 0):.2f} / {s.get('recall', 0):.1%} "
            f"| {m.get('exact', 0):.1%} / {m.get('mae', 0):.2f} / {m.get('recall', 0):.1%} "
            f"| {e.get('frames_with_people', 0)} of {e.get('frames', 0)} / {e.get('max_counted', 0)} "
            f"| {o.get('frames_with_people', 0)} of {o.get('frames', 0)} |"
        )
    lines += [
        "",
        "Settled frames (the truth unchanged for the last two frames: past the confirmation a track needs):",
        "",
        "| counter | one person: exact / MAE / recall | several: exact / MAE / recall |",
        "|---|---|---|",
    ]
    for name in names:
        t = results["table"][name]
        s, m = t.get("single_settled", {}), t.get("multi_settled", {})
        lines.append(
            f"| {name} | {s.get('exact', 0):.1%} / {s.get('mae', 0):.2f} / {s.get('recall', 0):.1%} "
            f"| {m.get('exact', 0):.1%} / {m.get('mae', 0):.2f} / {m.get('recall', 0):.1%} |"
        )
    lines += ["", "| counter | still | panning | enter/leave | (exact / MAE) |", "|---|---|---|---|---|"]
    for name in names:
        t = results["table"][name]
        cells = [t.get(f"kind:{k}", {}) for k in ("still", "pan", "enter-leave")]
        lines.append(
            f"| {name} | " + " | ".join(f"{c.get('exact', 0):.1%} / {c.get('mae', 0):.2f}" for c in cells) + " | |"
        )
    lines += [
        "",
        "Per clip (exact / MAE; empty scenes and objects: frames with people):",
        "",
        "| clip | kind | frames | " + " | ".join(names) + " |",
        "|---|---|---|" + "---|" * len(names),
    ]
    for row in results["clips"]:
        cells = []
        for name in names:
            c = row.get(name, {})
            if "recall" in c:
                cells.append(f"{c['exact']:.0%} / {c['mae']:.2f}")
            else:
                cells.append(f"{c.get('frames_with_people', 0)} of {c.get('frames', 0)}")
        lines.append(f"| {row['clip']} | {row['kind']} | {row['frames']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized run (1 minute of empty scenes)")
    ap.add_argument(
        "--counters",
        default=",".join(COUNTERS),
        help=f"comma-separated counters to run (default: all of {','.join(COUNTERS)}; the calibration sweep "
        "runs only with all of them)",
    )
    ap.add_argument(
        "--precision",
        choices=("auto", "f32", "int8"),
        default="auto",
        help="the detect stage's precision for the stage's counters (with SENSORIUM_OPENVINO_PRECISION=f32 in the "
        'environment, int8 is what precision = "int8" runs on a CPU without bf16)',
    )
    add_out(ap, RESULTS)
    args = ap.parse_args(argv)
    only = tuple(c for c in args.counters.split(",") if c)
    try:
        _check_counters(only)
    except ValueError as exc:
        ap.error(f"--{exc}")
    vision_media.progress_logging()
    return run_and_report(args.out, lambda: run(args.quick, only, args.precision), render)


if __name__ == "__main__":
    raise SystemExit(main())
