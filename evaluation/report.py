"""The replay report: latency per stage, the events produced, accuracy against labels, regression gate.

``make_report`` turns a replay's raw results into a JSON-ready dict:

- ``stages``: per stage ``count``, ``p50_ms``/``p95_ms``/``p99_ms``/``max_ms``, ``budget_ms``,
  ``violations``, ``dropped`` and the degrade ``ladder`` moves taken. With an embedded deployment
  these are the runtime's own measurements (capture time → stage done); against a remote hub they
  are measured from the events the stage published (capture time → event seen on the bus).
- ``events``: per type counts and every event in public JSON form with ``t`` = session time.
- ``accuracy`` (where the session has labels): wake hits, misses and false alarms; word error
  rate of final transcripts (jiwer); speaker accuracy; presence precision and recall per room;
  person counts seen by the detector.

``format_table`` renders it for a terminal, ``plot`` draws the latency distribution per stage
(matplotlib, Agg), and ``compare`` is the regression gate against a baseline report.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorium.pipeline import codec
from sensorium.pipeline.messages import (
    BudgetViolation,
    Detections,
    FaceRecognized,
    Message,
    Presence,
    SpeakerIdentified,
    Transcript,
    TtsAudio,
    WakeDetected,
)
from sensorium.pipeline.metrics import percentiles

REPORT_VERSION = 1


@functools.cache
def event_stages() -> dict[str, str]:
    """Which stage answers with each event type (for latency measured from events), from the stages' declarations."""
    from sensorium.registry import available

    return {
        str(m.__struct_config__.tag): name  # type: ignore[attr-defined]
        for name, cls in available().items()
        for m in cls.answers
    }


#: Which capture time each kind of answer is measured from (its "capture → event" latency). The
#: stamp is the answer's own ``time``; the latency counts from when the input holding that instant
#: was published (at speed 1: when it was captured), so an answer can never come before its input.
ANSWERED_FROM: dict[str, str] = {
    "wake": "the end of the wake word (the audio chunk holding it)",
    "transcript": "the end of the utterance (the endpoint)",
    "transcript.partial": "the end of the audio heard so far",
    "speaker": "the end of the utterance (the endpoint)",
    "detections": "the frame",
    "face": "the frame",
    "presence": "the frame or utterance it reports; a timer's decision (left, present): its own time",
    "tts_audio": "the say command it speaks",
}


WAKE_EARLY = 0.5
"""A wake detection may come this long before a labelled clip starts (buffering)…"""
WAKE_LATE = 1.5
"""…and this long after it ends."""
PRESENCE_GRACE = 5.0
"""A presence event counts for a labelled sighting up to this long after it ends."""
_WAKE_PREFIX = re.compile(r"^\s*((hey|hi|hay|a|ok|okay)[\s,.!]+)?(jarvis|jarvas|travis|jervis)\b[\s,.!?]*", re.I)


@dataclass
class StageRun:
    """One stage's measurements during a replay."""

    samples_ms: list[float] = field(default_factory=list)
    """Latency of every input (or event), milliseconds."""
    budget_ms: float = 0.0
    """The stage's budget."""
    violations: int = 0
    """Inputs over budget."""
    dropped: int = 0
    """Inputs dropped late."""
    ladder: list[str] = field(default_factory=list)
    """Degrade moves taken ("degraded:x", "restored:x")."""
    device: str = ""
    """Where it ran."""
    source: str = "runtime"
    """"runtime" (the stage runner's own numbers) or "events" (measured from its events)."""


@dataclass
class RunResult:
    """What a replay produced, before it is summarized."""

    events: list[tuple[float, Message]]
    """(hub time seen on the bus, event) in arrival order."""
    to_session: Callable[[float], float]
    """Maps a capture stamp of this run back to session time (labels are in session time)."""
    published_at: Callable[[float, Message | None, float | None], float] = lambda t, _m=None, _s=None: t
    """When the input behind an answer (its stamp, the answer) was published; event latency is measured from it."""
    budgets: dict[str, float] = field(default_factory=dict)
    """Stage budgets (ms) when ``stages`` is empty."""
    stages: dict[str, StageRun] = field(default_factory=dict)
    """Per-stage measurements from the runtime (empty against a remote hub)."""
    info: dict[str, Any] = field(default_factory=dict)
    """Session and run facts for the report header (name, files, speed, damage, wall time …)."""


# ----------------------------------------------------------------------------------------- helpers


_ONES = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen \
seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()


def _number(m: re.Match[str]) -> str:
    n = int(m.group(0))
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    return m.group(0)


def normalize_text(text: str, strip_wake: bool = True) -> str:
    """Lowercase words without punctuation, numbers below 100 spelled out; drops a leading "hey jarvis"."""
    if strip_wake:
        text = _WAKE_PREFIX.sub("", text)
    text = re.sub(r"\b\d{1,2}\b", _number, text)
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
    return " ".join(text.split())


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Word error rate over all pairs (jiwer; an own edit distance if jiwer is missing)."""
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]
    if not pairs:
        return 0.0
    try:
        import jiwer

        return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))
    except ImportError:
        errors = words = 0
        for r, h in pairs:
            a, b = r.split(), h.split()
            d = list(range(len(b) + 1))
            for i in range(1, len(a) + 1):
                prev, d[0] = d[0], i
                for j in range(1, len(b) + 1):
                    prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            errors += d[-1]
            words += len(a)
        return errors / max(words, 1)


def _pct(samples: Iterable[float]) -> dict[str, float]:
    """p50/p95/p99 and max in ms (``pipeline.metrics.percentile``: nearest rank), as ``p50_ms``…"""
    return {f"{k}_ms": round(v, 3) for k, v in percentiles(samples).items() if k != "n"}


def latency_ms(result: RunResult, seen: float, msg: Message) -> float:
    """Milliseconds from when the input ``msg`` answers was published to when ``msg`` was seen (``ANSWERED_FROM``)."""
    return (seen - result.published_at(msg.time, msg, seen)) * 1000


def is_answer(msg: Message) -> bool:
    """An event a stage makes from its input (it has a capture → event latency); not a report about the run."""
    return bool(msg.time) and not isinstance(msg, BudgetViolation) and event_stage(msg) in event_stages().values()


def event_stage(msg: Message) -> str:
    """The stage that produced an event (its type name if unknown)."""
    tag = type(msg).__struct_config__.tag  # type: ignore[attr-defined]
    return event_stages().get(str(tag), str(tag))


def signature(msg: Message) -> tuple[Any, ...] | None:
    """What an event says, timings aside (for "same events" comparisons); None for timing-only events."""
    if isinstance(msg, WakeDetected):
        return ("wake", msg.room, msg.word)
    if isinstance(msg, Transcript):
        return ("transcript", msg.room, normalize_text(msg.text, strip_wake=False), msg.speaker) if msg.final else None
    if isinstance(msg, SpeakerIdentified):
        return ("speaker", msg.room, msg.person)
    if isinstance(msg, Detections):
        return ("detections", msg.room, msg.camera, msg.frame_seq, msg.persons)
    if isinstance(msg, FaceRecognized):
        return ("face", msg.room, msg.camera, msg.person)
    if isinstance(msg, Presence):
        return ("presence", msg.room, msg.person, msg.state)
    return None


def signatures(events: Iterable[Message]) -> list[tuple[Any, ...]]:
    """Signatures of the content events, sorted so arrival order across rooms does not matter."""
    return sorted(s for s in (signature(m) for m in events) if s is not None)


# -------------------------------------------------------------------------------------------- stages


def answer_table(result: RunResult) -> dict[str, dict[str, Any]]:
    """Latency of each kind of answer, from its input's publish (= capture at speed 1) to it being seen on the bus.

    Keyed by event type (final and partial transcripts apart). This is what a user waits for: a
    transcript's latency counts from the end of the audio it transcribes, not per audio chunk.
    """
    samples: dict[str, list[float]] = defaultdict(list)
    for seen, msg in result.events:
        if not is_answer(msg):
            continue
        tag = str(type(msg).__struct_config__.tag)  # type: ignore[attr-defined]
        if isinstance(msg, Transcript):
            tag = "transcript" if msg.final else "transcript.partial"
        samples[tag].append(latency_ms(result, seen, msg))
    return {k: {"count": len(v), **_pct(v)} for k, v in sorted(samples.items())}


def stage_table(result: RunResult, budgets: dict[str, float] | None = None) -> dict[str, dict[str, Any]]:
    """Per-stage latency summary: the runtime's numbers, or measured from events if none."""
    budgets = {**result.budgets, **(budgets or {})}
    stages: dict[str, StageRun] = {k: v for k, v in result.stages.items()}
    if not stages:
        for seen, msg in result.events:
            if not is_answer(msg):
                continue
            name = event_stage(msg)
            if isinstance(msg, Transcript) and not msg.final:
                name = "stt.partial"
            run = stages.setdefault(name, StageRun(source="events", budget_ms=budgets.get(name, 0.0)))
            run.samples_ms.append(latency_ms(result, seen, msg))
        for _, msg in result.events:
            if isinstance(msg, BudgetViolation):
                run = stages.setdefault(msg.stage, StageRun(source="events", budget_ms=msg.budget_ms))
                run.budget_ms = run.budget_ms or msg.budget_ms
                run.violations += 1
                if msg.action == "dropped":
                    run.dropped += 1
                if msg.action.startswith(("degraded:", "restored:")):
                    run.ladder.append(msg.action)
    out: dict[str, dict[str, Any]] = {}
    for name in sorted(stages):
        run = stages[name]
        out[name] = {
            "count": len(run.samples_ms),
            **_pct(run.samples_ms),
            "budget_ms": round(run.budget_ms, 3),
            "violations": run.violations,
            "dropped": run.dropped,
            "ladder": list(run.ladder),
            "device": run.device,
            "source": run.source,
        }
    return out


# ------------------------------------------------------------------------------------------ accuracy


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def accuracy(result: RunResult, labels: Sequence[Any]) -> dict[str, Any]:
    """Accuracy of the run's events against the session's labels (session time)."""
    from sensorium.evaluation.session import PeopleLabel, SpeechLabel

    ts = result.to_session
    speech = [lb for lb in labels if isinstance(lb, SpeechLabel)]
    people = [lb for lb in labels if isinstance(lb, PeopleLabel)]
    events = [m for _, m in result.events]
    out: dict[str, Any] = {}
    ran_stages = result.info.get("stages")
    produced = {event_stage(m) for m in events}

    def ran(stage: str) -> bool:
        # accuracy of a stage that did not run would only say "0 %": leave it out
        return stage in ran_stages if ran_stages is not None else stage in produced

    # ---- wake: every detection matches at most one labelled clip in its room
    wakes = [(ts(m.time), m) for m in events if isinstance(m, WakeDetected)]
    if speech and ran("wake"):
        positives = [lb for lb in speech if lb.wake]
        hit: set[int] = set()
        false_alarms = 0
        delays: list[float] = []
        for t, w in wakes:
            match = next(
                (
                    i
                    for i, lb in enumerate(speech)
                    if lb.room == w.room and lb.t0 - WAKE_EARLY <= t <= lb.t1 + WAKE_LATE
                ),
                None,
            )
            if match is None or not speech[match].wake:
                false_alarms += 1
            elif match not in hit:
                hit.add(match)
                delays.append(t - speech[match].t0)
        misses = [lb for i, lb in enumerate(speech) if lb.wake and i not in hit]
        out["wake"] = {
            "labelled": len(positives),
            "hits": len(hit),
            "misses": len(misses),
            "false_alarms": false_alarms,
            "hit_rate": round(len(hit) / len(positives), 4) if positives else None,
            "missed": [f"{lb.room} @{lb.t0 - _t0(labels):.1f}s: {lb.text!r} ({lb.speaker})" for lb in misses],
        }

    # ---- transcripts and speakers: the final transcript overlapping each labelled command
    finals = [m for m in events if isinstance(m, Transcript) and m.final]
    speakers = {m.utterance_id: m for m in events if isinstance(m, SpeakerIdentified) and m.utterance_id}
    refs: list[str] = []
    hyps: list[str] = []
    rows: list[dict[str, Any]] = []
    spk_total = spk_ok = 0
    used: set[int] = set()
    for lb in (lb for lb in speech if lb.wake and lb.text):
        best, best_ov = None, 0.0
        for k, tr in enumerate(finals):
            if tr.room != lb.room or k in used:
                continue
            t0, t1 = ts(tr.t0 or tr.time), ts(tr.t1 or tr.time)
            ov = _overlap(lb.t0, lb.t1, t0, max(t1, t0 + 0.01))
            if ov > best_ov:
                best, best_ov = k, ov
        tr = finals[best] if best is not None else None
        if best is not None:
            used.add(best)
        hyp = normalize_text(tr.text) if tr else ""
        refs.append(normalize_text(lb.text))
        hyps.append(hyp)
        who = None
        if tr is not None:
            sp = speakers.get(tr.utterance_id)
            who = sp.person if sp is not None else tr.speaker
        if lb.speaker:
            spk_total += 1
            spk_ok += int(who == lb.speaker)
        rows.append(
            {
                "room": lb.room,
                "said": lb.text,
                "heard": tr.text if tr else None,
                "speaker": lb.speaker,
                "identified": who,
            }
        )
    if refs and ran("stt"):
        out["transcripts"] = {"wer": round(wer(refs, hyps), 4), "utterances": len(refs), "rows": rows}
    if spk_total and (ran("speaker") or any(tr.speaker for tr in finals)):
        out["speaker"] = {"labelled": spk_total, "correct": spk_ok, "accuracy": round(spk_ok / spk_total, 4)}

    # ---- presence per room: labelled (person, room, interval) vs entered/present events
    truth: dict[str, list[tuple[str, float, float]]] = defaultdict(list)
    for lb in people:
        for person in lb.people:
            truth[lb.room].append((person, lb.t0, lb.t1))
    for lb in speech:
        if lb.speaker and lb.wake:  # whoever speaks a command in a room is there (other speech is not identified)
            truth[lb.room].append((lb.speaker, lb.t0, lb.t1))
    pres = [(ts(m.time), m) for m in events if isinstance(m, Presence) and m.state != "left" and m.person != "unknown"]
    if (truth or pres) and ran("presence"):
        per_room: dict[str, Any] = {}
        for room in sorted(set(truth) | {m.room for _, m in pres}):
            evs = [(t, m) for t, m in pres if m.room == room]
            spans = truth.get(room, [])
            tp = sum(
                1 for t, m in evs if any(p == m.person and t0 - 1.0 <= t <= t1 + PRESENCE_GRACE for p, t0, t1 in spans)
            )
            seen = sum(
                1 for p, t0, t1 in spans if any(m.person == p and t0 - 1.0 <= t <= t1 + PRESENCE_GRACE for t, m in evs)
            )
            per_room[room] = {
                "events": len(evs),
                "labelled": len(spans),
                "precision": round(tp / len(evs), 4) if evs else None,
                "recall": round(seen / len(spans), 4) if spans else None,
            }
        out["presence"] = per_room

    # ---- detector person counts against labelled counts
    dets = [(ts(m.time), m) for m in events if isinstance(m, Detections)]
    if people and dets:
        exact = total = 0
        err = 0.0
        for lb in people:
            for t, d in dets:
                if d.room == lb.room and (not d.camera or d.camera == lb.camera) and lb.t0 <= t < lb.t1:
                    total += 1
                    exact += int(d.persons == lb.persons)
                    err += abs(d.persons - lb.persons)
        if total:
            out["detections"] = {
                "frames": total,
                "count_exact": round(exact / total, 4),
                "count_mae": round(err / total, 4),
            }
    return out


def _t0(labels: Sequence[Any]) -> float:
    return min((lb.t0 for lb in labels), default=0.0)


# -------------------------------------------------------------------------------------------- report


def make_report(result: RunResult, labels: Sequence[Any] = (), budgets: dict[str, float] | None = None) -> dict:
    """The whole report as a JSON-ready dict."""
    events = [m for _, m in result.events]
    counts = Counter(str(type(m).__struct_config__.tag) for m in events)  # type: ignore[attr-defined]
    start = float(result.info.get("session_start", 0.0))
    listed = []
    for seen, m in result.events:
        if isinstance(m, TtsAudio):
            continue  # audio chunks: counted, not listed
        d = codec.to_dict(m)
        d["t"] = round(result.to_session(m.time) - start, 3) if m.time else None
        d["latency_ms"] = round(latency_ms(result, seen, m), 3) if is_answer(m) else None
        listed.append(d)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "info": dict(result.info),
        "stages": stage_table(result, budgets),
        "answers": answer_table(result),
        "events": {"counts": dict(sorted(counts.items())), "list": listed},
    }
    if labels:
        report["accuracy"] = accuracy(result, labels)
    return report


def _ms(v: Any) -> str:
    return f"{v:.1f}" if isinstance(v, int | float) else "-"


def format_table(report: dict) -> str:
    """A readable summary for the terminal."""
    lines = []
    info = report.get("info", {})
    if info:
        head = ", ".join(
            f"{k}={v}" for k, v in info.items() if k in ("session", "speed", "mode", "wall_s", "published")
        )
        lines.append(f"replay: {head}")
        if info.get("damage"):
            lines.append(f"WARNING: {info['damage']}")
    lines.append("")
    cols = ("stage", "count", "p50 ms", "p95 ms", "p99 ms", "max ms", "budget", "viol.", "drop", "degrade")
    rows = []
    for name, s in report.get("stages", {}).items():
        rows.append(
            (
                name,
                str(s.get("count", 0)),
                _ms(s.get("p50_ms")),
                _ms(s.get("p95_ms")),
                _ms(s.get("p99_ms")),
                _ms(s.get("max_ms")),
                _ms(s.get("budget_ms")),
                str(s.get("violations", 0)),
                str(s.get("dropped", 0)),
                ",".join(s.get("ladder", [])) or "-",
            )
        )
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines.append("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    answers = report.get("answers", {})
    if answers and any(s.get("source") == "runtime" for s in report.get("stages", {}).values()):
        lines.append("")
        lines.append("answers (from input capture to the event on the bus):")
        for name, a in answers.items():
            lines.append(
                f"  {name:<20} n={a['count']:<5} p50 {_ms(a.get('p50_ms'))} ms  p95 {_ms(a.get('p95_ms'))} ms  "
                f"max {_ms(a.get('max_ms'))} ms   from {ANSWERED_FROM.get(name, 'its capture time')}"
            )
    counts = report.get("events", {}).get("counts", {})
    lines.append("")
    lines.append("events: " + (", ".join(f"{k} {v}" for k, v in counts.items()) or "none"))
    acc = report.get("accuracy")
    if acc:
        lines.append("")
        if "wake" in acc:
            w = acc["wake"]
            lines.append(
                f"wake: {w['hits']}/{w['labelled']} hits, {w['misses']} misses, {w['false_alarms']} false alarms"
            )
        if "transcripts" in acc:
            lines.append(f"transcripts: WER {acc['transcripts']['wer']:.1%} over {acc['transcripts']['utterances']}")
            for r in acc["transcripts"]["rows"]:
                lines.append(
                    f"  [{r['room']}] said {r['said']!r} heard {r['heard']!r} by {r['identified']} ({r['speaker']})"
                )
        if "speaker" in acc:
            s = acc["speaker"]
            lines.append(f"speaker: {s['correct']}/{s['labelled']} correct ({s['accuracy']:.0%})")
        for room, p in acc.get("presence", {}).items():
            prec = "-" if p["precision"] is None else f"{p['precision']:.0%}"
            rec = "-" if p["recall"] is None else f"{p['recall']:.0%}"
            lines.append(
                f"presence {room}: precision {prec} ({p['events']} events), recall {rec} ({p['labelled']} labelled)"
            )
        if "detections" in acc:
            d = acc["detections"]
            lines.append(
                f"detections: person count exact in {d['count_exact']:.0%} of {d['frames']} frames "
                f"(mean abs. error {d['count_mae']})"
            )
    return "\n".join(lines)


def plot(result: RunResult, out_dir: str | Path, report: dict | None = None, stem: str = "latency") -> list[Path]:
    """PNG plots of the latency distribution per stage (histogram with budget line); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stages = {k: v for k, v in result.stages.items() if v.samples_ms}
    if not stages:  # measured from events
        for seen, m in result.events:
            if is_answer(m):
                stages.setdefault(event_stage(m), StageRun(source="events")).samples_ms.append(
                    latency_ms(result, seen, m)
                )
    table = (report or {}).get("stages", {})
    paths: list[Path] = []
    if not stages:
        return paths
    fig, axes = plt.subplots(len(stages), 1, figsize=(8, 2.2 * len(stages)), squeeze=False)
    for ax, (name, run) in zip(axes[:, 0], sorted(stages.items()), strict=True):
        ax.hist(run.samples_ms, bins=40, color="#4c72b0")
        budget = run.budget_ms or table.get(name, {}).get("budget_ms", 0.0)
        if budget:
            ax.axvline(budget, color="#c44e52", linestyle="--", label=f"budget {budget:.0f} ms")
            ax.legend(loc="upper right", fontsize=8)
        p = percentiles(run.samples_ms)
        ax.set_title(f"{name}: n={len(run.samples_ms)} p50 {p['p50']:.1f} ms p95 {p['p95']:.1f} ms", fontsize=9)
        ax.set_xlabel("latency from capture (ms)", fontsize=8)
    fig.tight_layout()
    path = out_dir / f"{stem}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    paths.append(path)
    return paths


# -------------------------------------------------------------------------------------- regression


@dataclass
class Comparison:
    """Outcome of the regression gate."""

    ok: bool
    """True if nothing regressed past the tolerance."""
    lines: list[str]
    """One line per finding (regressions first)."""


def compare(report: dict, baseline: dict, tolerance: float = 0.2, accuracy_tolerance: float = 0.05) -> Comparison:
    """Compare with a baseline report.

    A stage regresses when its p50 or p95 grows by more than ``tolerance`` (relative) and by more
    than 1 ms; accuracy regresses when a rate drops (or WER / false alarms grow) by more than
    ``accuracy_tolerance`` (absolute). A stage missing from the new report is a regression too.
    """
    bad: list[str] = []
    good: list[str] = []
    base_st, new_st = baseline.get("stages", {}), report.get("stages", {})
    for name, b in base_st.items():
        n = new_st.get(name)
        if n is None or not n.get("count"):
            if b.get("count"):
                bad.append(f"{name}: produced nothing (baseline {b['count']} inputs)")
            continue
        for key in ("p50_ms", "p95_ms"):
            bv, nv = b.get(key), n.get(key)
            if bv is None or nv is None:
                continue
            change = (nv - bv) / bv if bv > 0 else 0.0
            text = f"{name}: {key[:3]} {nv:.1f} ms vs {bv:.1f} ms baseline ({change:+.0%}, tolerance {tolerance:.0%})"
            if nv - bv > 1.0 and change > tolerance:
                bad.append(text + " - slower")
            else:
                good.append(text)
    ba, na = baseline.get("accuracy", {}), report.get("accuracy", {})

    def check(label: str, bv: float | None, nv: float | None, higher_is_better: bool) -> None:
        if bv is None or nv is None:
            return
        worse = (bv - nv) if higher_is_better else (nv - bv)
        text = f"{label}: {nv:.3f} vs {bv:.3f} baseline"
        (bad if worse > accuracy_tolerance else good).append(
            text + (" - less accurate" if worse > accuracy_tolerance else "")
        )

    if "wake" in ba:
        check("wake hit rate", ba["wake"].get("hit_rate"), na.get("wake", {}).get("hit_rate", 0.0), True)
        bl, nl = ba["wake"].get("labelled") or 1, na.get("wake", {}).get("labelled") or 1
        check(
            "wake false alarms per labelled clip",
            ba["wake"]["false_alarms"] / bl,
            na.get("wake", {}).get("false_alarms", 0) / nl,
            False,
        )
    if "transcripts" in ba:
        check("WER", ba["transcripts"]["wer"], na.get("transcripts", {}).get("wer", 1.0), False)
    if "speaker" in ba:
        check("speaker accuracy", ba["speaker"]["accuracy"], na.get("speaker", {}).get("accuracy", 0.0), True)
    for room, bp in ba.get("presence", {}).items():
        np_ = na.get("presence", {}).get(room, {})
        for key in ("precision", "recall"):
            check(f"presence {room} {key}", bp.get(key), np_.get(key, 0.0), True)
    return Comparison(ok=not bad, lines=bad + good)
