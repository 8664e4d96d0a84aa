"""End-to-end benchmark: the labelled sample session replayed through every stage, in real time and at max speed.

Real time (speed 1) gives each stage's latency from capture as the runtime measures it, with its
budget, violations and degrade steps; max speed gives how many seconds of session the pipeline
chews per second of wall time and the latency from publish to answer. Both report the accuracy
against the session's labels (wake, WER, speaker, presence). The sample's three voices and the
enrolled face are put in a fresh gallery first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.outfile import add_out, write_results

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent.parent / ".cache" / "sample"
STAGES = ["wake", "stt", "speaker", "detect", "face", "presence"]


def enroll_sample(data_dir: Path, cache: Path = CACHE) -> dict[str, list[str]]:
    """Enrol the sample session's people (voices from other sentences, the face from its package image)."""
    import numpy as np

    from sensorium.evaluation.session import sample_enrollment
    from sensorium.models.faces import FacePipeline
    from sensorium.models.gallery import Gallery
    from sensorium.models.speaker import load_encoder
    from sensorium.pipeline.media import read_wav

    media = sample_enrollment(cache)
    data_dir.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder("resemblyzer", "cpu")
    faces = FacePipeline()
    done: dict[str, list[str]] = {}
    with Gallery(data_dir / "gallery.db") as g:
        for person, kinds in media.items():
            for wav in kinds["voice"]:
                g.add(person, "voice", encoder.model_id, encoder.embed(read_wav(wav).astype(np.int16), 16000))
                done.setdefault(person, []).append("voice")
            for image in kinds["face"]:
                emb, model_id = faces.embed_image_file(image)
                g.add(person, "face", model_id, emb)
                done.setdefault(person, []).append("face")
    return done


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("count", "p50_ms", "p95_ms", "p99_ms", "max_ms", "budget_ms", "violations", "dropped", "ladder")
    return {
        "info": {k: v for k, v in report["info"].items() if k != "files"},
        "stages": {name: {k: s.get(k) for k in keep} for name, s in report["stages"].items()},
        "answers": report["answers"],
        "events": report["events"]["counts"],
        "accuracy": report.get("accuracy", {}),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Build the sample, enrol its people, replay it (max speed; and real time unless ``quick``)."""
    from sensorium.evaluation.replay import ReplayOptions, default_deployment, load, replay
    from sensorium.evaluation.report import make_report
    from sensorium.evaluation.session import build_sample

    results: dict[str, Any] = {"benchmark": "replay", "quick": quick, "stages": STAGES, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "sample.mcap"
        built = build_sample(path, CACHE)
        results["session"] = {"duration_s": round(built.duration, 2), "labels": len(built.labels)}
        data = Path(tmp) / "data"
        results["enrolled"] = enroll_sample(data)
        session = load(path)
        dep = default_deployment(session, data, STAGES)
        for speed in [0.0] if quick else [0.0, 1.0]:
            label = "max" if speed == 0 else f"{speed:g}x"
            print(f"replay: sample session at {label} …", file=sys.stderr)
            t = time.monotonic()
            res = asyncio.run(replay(session, ReplayOptions(speed=speed, settle=2.0), dep))
            report = make_report(res, session.labels)
            entry = _summary(report)
            entry["wall_s"] = round(time.monotonic() - t, 2)
            entry["session_s_per_wall_s"] = round(session.duration / max(res.info["wall_s"], 1e-9), 3)
            results["runs"][label] = entry
    return results


def render(results: dict[str, Any]) -> str:
    """Markdown lines for the summary."""
    lines = [
        f"End-to-end replay of the sample session ({results['session']['duration_s']} s), stages: "
        + ", ".join(results["stages"])
    ]
    for label, r in results["runs"].items():
        lines.append("")
        lines.append(f"speed {label}: {r['session_s_per_wall_s']} s of session per s of wall time")
        lines.append("| stage | n | p50 ms | p95 ms | p99 ms | budget ms | violations | degrade |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for name, s in r["stages"].items():
            lines.append(
                f"| {name} | {s['count']} | {s.get('p50_ms')} | {s.get('p95_ms')} | {s.get('p99_ms')} | "
                f"{s['budget_ms']} | {s['violations']} | {', '.join(s['ladder'] or []) or '-'} |"
            )
        answers = r.get("answers", {})
        if answers:
            lines.append(
                "answers p50/p95 ms (capture → event on the bus): "
                + "; ".join(f"{k} {a.get('p50_ms')}/{a.get('p95_ms')}" for k, a in answers.items())
            )
        acc = r.get("accuracy", {})
        if "wake" in acc:
            w = acc["wake"]
            lines.append(f"wake {w['hits']}/{w['labelled']}, false alarms {w['false_alarms']}")
        if "transcripts" in acc:
            lines.append(f"WER {acc['transcripts']['wer']:.1%}")
        if "speaker" in acc:
            lines.append(f"speaker accuracy {acc['speaker']['accuracy']:.0%}")
        for room, p in acc.get("presence", {}).items():
            lines.append(f"presence {room}: precision {p['precision']}, recall {p['recall']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="max speed only")
    add_out(ap, RESULTS / "replay.json")
    args = ap.parse_args(argv)
    results = write_results(args.out, lambda: run(args.quick))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
