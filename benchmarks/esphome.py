"""Home Assistant's pipeline through a room's ESPHome device vs through its Wyoming satellite, same audio.

Everything real: Home Assistant 2025.4.4 (``.venv-homeassistant``), sensorium's hub and stages (wake,
arbiter, stt, tts) and its Wyoming STT, agent and TTS as HA's preferred pipeline. The kitchen is an
ESPHome device (``sensorium esphome``), the office a Wyoming satellite (``sensorium wyoming``); each
room's microphone node hears the same "hey jarvis … what time is it" in turn (published on the bus in
real time, as an edge does), and its loudspeaker edge plays the answer. The kitchen's commands run twice,
alternating: as the gateway handles them (Home Assistant's copy of the device's command recognised, its
transcript already made) and with that recognition off (the stt stage transcribes the command a second time,
as before). The first command after the start (the ESPHome path) is reported on its own. Measured per
command:

* end of speech → Home Assistant's pipeline ``run-end`` (HA's own debug timestamps);
* end of speech → the answer's first audio on the bus for the room's edge;
* ``assist_satellite.start_conversation`` called → its prompt's first audio for the kitchen's edge.

With ``--lva CHECKOUT`` linux-voice-assistant (the ESPHome satellite HA's voice project points to) runs beside
them as a third device on the same pipeline and the same utterance, heard through a PulseAudio microphone; its
answer's first audio is what its player played (``benchmarks/peers/lva.py``).

Run with ``python -m benchmarks.esphome [--quick] [--lva CHECKOUT]`` (in ``python -m benchmarks``, the checkout
is ``SENSORIUM_BENCH_LVA``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable (never tests/)
    sys.path.insert(0, str(ROOT))

from benchmarks.outfile import add_out, write_results  # noqa: E402  (after the path set-up above)

ROOMS = {"kitchen": "esphome", "office": "wyoming"}
CASES = [("kitchen", "esphome", True), ("kitchen", "esphome_transcribed_twice", False), ("office", "wyoming", True)]
"""(room, path, gateway recognises the device's command relayed by HA): the ESPHome path as it is and as it
was before the gateway recognised HA's copy of the device's command (the stt stage transcribed it twice)."""


def _pcts(xs: list[float]) -> dict[str, Any]:
    from sensorium.pipeline.metrics import summary

    return summary(xs, scale=1000, digits=0, suffix="_ms") if xs else {"n": 0}


LVA = ("lva", "linux_voice_assistant", False)
"""linux-voice-assistant's case: its own device, not a sensorium room."""


async def _session(
    ha: Any, folder: Path, reps: int, convs: int, lva_at: tuple[Path, Path | None] | None = None
) -> dict[str, Any]:
    from benchmarks.peers.lva import Lva
    from sensorium.apps.agent import run_builtin_agent
    from sensorium.bridges.esphome.server import Server
    from sensorium.deployment import deployment_from_dict
    from sensorium.edge.agent import EdgeAgent
    from sensorium.embedded import embedded
    from sensorium.evaluation import media
    from sensorium.evaluation.homeassistant import (
        Mic,
        add_wyoming,
        entities_of,
        last_pipeline_run,
        played,
        prefer_sensorium_pipeline,
        wavs,
        wyoming_gateway,
    )
    from sensorium.evaluation.ports import free_ports
    from sensorium.pipeline.bus import Publisher, Subscriber
    from sensorium.pipeline.messages import TtsAudio

    p = dict(zip(("stt", "tts", "handle"), free_ports(3), strict=True))
    [dev_port, sat_port, lva_port] = free_ports(3)
    cases = [*CASES, LVA] if lva_at else CASES
    lva = Lva(*lva_at, folder / "lva", lva_port) if lva_at else None
    cache = ROOT / ".cache" / "media"
    addr = f"ipc://{folder}/hub"
    raw = {
        "data_dir": str(folder / "data"),
        "hub": {"address": addr, "heartbeat": "250ms"},
        "rooms": {r: {"speaker": f"{r}-speaker"} for r in ROOMS},
        "edges": {
            **{f"{r}-mic": {"room": r, "microphone": {}} for r in ROOMS},
            **{f"{r}-speaker": {"room": r, "playback": {"wav_dir": str(folder / f"played-{r}")}} for r in ROOMS},
        },
        "workers": {"local": {"stages": ["wake", "arbiter", "stt", "tts"]}},
        "stages": {"tts": {"voice_noise": False}},
        "wyoming": {
            "host": "127.0.0.1",
            "zeroconf": False,
            **{f"{r}_port": p[r] for r in ("stt", "tts", "handle")},
            "wake_port": 0,
            "satellites": {"office": sat_port},
        },
        "esphome": {
            "host": "127.0.0.1",
            "zeroconf": False,
            "rooms": {"kitchen": dev_port},
            "key_file": str(folder / "esphome.key"),
        },
    }
    dep = deployment_from_dict(raw, "<benchmark>")
    first_audio: dict[str, list[float]] = {r: [] for r in ROOMS}
    out: dict[str, Any] = {}
    async with embedded(dep, address=addr) as env, wyoming_gateway(dep, env.endpoints, clock=env.clock) as gw:
        server = Server(dep, endpoints=env.endpoints, clock=env.clock)
        await server.start()
        agent = asyncio.create_task(run_builtin_agent(env.endpoints, clock=env.clock))
        speakers = [EdgeAgent(dep, f"{r}-speaker", hub_address=env.address, clock=env.clock) for r in ROOMS]
        tasks = [asyncio.create_task(a.run()) for a in speakers]
        pub = Publisher(env.endpoints)
        mics = {r: Mic(pub, env.clock, r, f"{r}-mic") for r in ROOMS}
        tasks += [asyncio.create_task(m.run()) for m in mics.values()]
        sub = Subscriber(env.endpoints, ["tts_audio/"])
        seen: set[str] = set()

        async def watch() -> None:
            while True:
                m = await sub.recv()
                if isinstance(m, TtsAudio) and m.answer_id not in seen and m.room in first_audio:
                    seen.add(m.answer_id)
                    first_audio[m.room].append(time.monotonic())

        tasks.append(asyncio.create_task(watch()))
        try:
            entries = await add_wyoming(ha, {**p, "office": sat_port})
            entries["kitchen"] = (
                await ha.add_integration("esphome", {"host": "127.0.0.1", "port": dev_port}, {"noise_psk": server.key})
            )["entry_id"]
            if lva is not None:
                await lva.start()
                entries["lva"] = (await ha.add_integration("esphome", {"host": "127.0.0.1", "port": lva_port}))[
                    "entry_id"
                ]
            ents = await entities_of(ha, entries)
            sat = next(e for e in ents["kitchen"] if e.startswith("assist_satellite."))
            async with ha.websocket() as ws:
                await ws.call("config/core/update", internal_url=ha.url)
                pipeline = await prefer_sensorium_pipeline(ws, ents)
            hey, what = (media.speech(t, "piper:joe", cache) for t in ("hey jarvis", "what time is it"))
            utterance = media.concat(0.3, hey, 0.4, what)
            offset = time.time() - time.monotonic()
            res: dict[str, dict[str, list[float]]] = {
                c[1]: {"run_end": [], "first_audio": [], "handed": [], "vad_end": []} for c in cases
            }
            answered = {c[1]: 0 for c in cases}
            recognised = {c[1]: 0 for c in cases}
            candidates = gw.relayed.candidates
            heard: dict[str, list[str]] = {}

            async def note_run(path: str, end: float) -> None:
                """HA's own account of the command's pipeline run: when its VAD heard the end of speech (on a
                device that does not say so itself), when the run ended, and what it transcribed."""
                run = await last_pipeline_run(ha, pipeline)
                events = {e["type"]: e for e in run["events"]}
                for kind, key in (("run-end", "run_end"), ("stt-vad-end", "vad_end")):
                    if kind in events:
                        t = datetime.fromisoformat(events[kind]["timestamp"]).timestamp() - offset
                        res[path][key].append(t - end)
                text = ((events.get("stt-end") or {}).get("data") or {}).get("stt_output", {}).get("text", "")
                heard.setdefault(path, []).append(text)
                await asyncio.sleep(1.5)

            # The first command after the start (HA's first pipeline run, first synthesis) is reported on its
            # own, so that its cost does not land on whichever path happens to go first.
            plan = [[("kitchen", "first_command", True)]] + [cases] * reps
            res["first_command"], answered["first_command"], recognised["first_command"] = (
                {"run_end": [], "first_audio": [], "handed": [], "vad_end": []}, 0, 0,
            )  # fmt: skip
            for turn in plan:
                for room, path, relayed in turn:
                    if lva is not None and path == LVA[1]:
                        end = await lva.say(utterance)
                        handed, first = await lva.answered(end)
                        if first is None:
                            continue
                        answered[path] += 1
                        res[path]["first_audio"].append(first - end)
                        if handed is not None:
                            res[path]["handed"].append(handed - end)
                        await note_run(path, end)
                        continue
                    gw.relayed.candidates = candidates if relayed else list  # off: no claim is ever a candidate
                    n_relayed = gw.metrics.relayed_commands
                    before = wavs(folder / f"played-{room}")
                    n_audio = len(first_audio[room])
                    end = time.monotonic() + len(utterance) / 16000 + 0.1
                    logging.getLogger("sensorium.esphome").debug("benchmark: %s: end of speech at %.3f", room, end)
                    mics[room].say(utterance)
                    try:
                        await played(folder / f"played-{room}", before, timeout=40)
                    except AssertionError:
                        continue
                    answered[path] += 1
                    recognised[path] += gw.metrics.relayed_commands - n_relayed
                    if len(first_audio[room]) > n_audio:
                        res[path]["first_audio"].append(first_audio[room][n_audio] - end)
                    await note_run(path, end)
            gw.relayed.candidates = candidates
            for room, path, _relayed in [("kitchen", "first_command", True), *cases]:
                out[path] = {
                    "room": room,
                    "commands": 1 if path == "first_command" else reps,
                    "answered": answered[path],
                    "recognised_relayed": recognised[path],
                    "end_of_speech_to_pipeline_end": _pcts(res[path]["run_end"]),
                    "end_of_speech_to_first_answer_audio": _pcts(res[path]["first_audio"]),
                    "transcripts": sorted(set(heard.get(path, []))),
                }
                if res[path]["vad_end"]:
                    out[path]["end_of_speech_to_ha_vad_end"] = _pcts(res[path]["vad_end"])
                if path == LVA[1]:
                    # its first audio is what its player played (after fetching the answer from HA); the moment the
                    # answer's address reached the player is the closer match to the bus measure of the others
                    out[path]["end_of_speech_to_answer_handed_to_player"] = _pcts(res[path]["handed"])
            prompt: list[float] = []
            conv_answered = 0
            for _ in range(convs):
                before = wavs(folder / "played-kitchen")
                n_audio = len(first_audio["kitchen"])
                t0 = time.monotonic()
                await ha.request(
                    "POST",
                    "/api/services/assist_satellite/start_conversation",
                    {"entity_id": sat, "start_message": "Welcome home.", "preannounce": False},
                )
                if len(first_audio["kitchen"]) > n_audio:
                    prompt.append(first_audio["kitchen"][n_audio] - t0)
                # the person answers once the prompt has played and the room listens (as a person would; HA's
                # call may return while the edge still plays an earlier answer and then the prompt)
                async with asyncio.timeout(20):
                    while server.devices["kitchen"].run is None:
                        await asyncio.sleep(0.05)
                mics["kitchen"].say(media.concat(0.3, what))
                try:
                    before.add(await played(folder / "played-kitchen", before, timeout=40))
                    await played(folder / "played-kitchen", before, timeout=20)
                    conv_answered += 1
                except AssertionError:
                    pass
                await asyncio.sleep(1.5)
            out["start_conversation_to_prompt_audio"] = _pcts(prompt)
            out["start_conversation_commands_answered"] = f"{conv_answered}/{convs}"
        finally:
            for a in speakers:
                a.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            agent.cancel()
            await asyncio.gather(agent, return_exceptions=True)
            sub.close()
            pub.close()
            await server.stop()
            if lva is not None:
                await lva.stop()
    return out


async def _main(quick: bool, folder: Path, lva_at: tuple[Path, Path | None] | None) -> dict[str, Any]:
    from sensorium.evaluation.homeassistant import running

    result: dict[str, Any] = {"benchmark": "esphome", "quick": quick}
    with running(folder / "ha") as ha:
        result.update(await _session(ha, folder / "s", reps=3 if quick else 10, convs=2 if quick else 5, lva_at=lva_at))
    with open("/proc/loadavg") as f:
        result["loadavg"] = f.read().split()[:3]
    return result


def run(quick: bool = False, lva: Path | None = None, lva_python: Path | None = None) -> dict[str, Any]:
    """``lva``: a linux-voice-assistant checkout to run beside the room devices (``lva_python``: its Python);
    ``SENSORIUM_BENCH_LVA`` (and ``SENSORIUM_BENCH_LVA_PYTHON``) name them for ``python -m benchmarks``."""
    from benchmarks.peers.lva import missing_reason

    if lva is None and os.environ.get("SENSORIUM_BENCH_LVA"):
        lva = Path(os.environ["SENSORIUM_BENCH_LVA"])
        lva_python = lva_python or (Path(p) if (p := os.environ.get("SENSORIUM_BENCH_LVA_PYTHON")) else None)

    if lva is not None and (why := missing_reason(lva, lva_python)):
        raise SystemExit(f"benchmarks.esphome: linux-voice-assistant cannot run: {why}")
    with tempfile.TemporaryDirectory(prefix="bench-esphome-") as d:
        (Path(d) / "s").mkdir()
        return asyncio.run(_main(quick, Path(d), (lva, lva_python) if lva else None))


def render(r: dict[str, Any]) -> str:
    lines = []
    for path in ["first_command", *(c[1] for c in [*CASES, LVA])]:
        if path not in r:
            continue
        x = r[path]
        e, a = x["end_of_speech_to_pipeline_end"], x["end_of_speech_to_first_answer_audio"]
        lines.append(
            f"{path:<25} ({x['room']}): {x['answered']}/{x['commands']} answered"
            f" ({x.get('recognised_relayed', 0)} recognised relayed); end of speech → HA pipeline end"
            f" p50 {e.get('p50_ms')} ms p95 {e.get('p95_ms')} ms; → first answer audio at the edge"
            f" p50 {a.get('p50_ms')} ms p95 {a.get('p95_ms')} ms"
        )
        if v := x.get("end_of_speech_to_ha_vad_end"):
            lines.append(f"{'':<25} → HA's VAD heard the end p50 {v.get('p50_ms')} ms p95 {v.get('p95_ms')} ms")
        lines.append(f"{'':<25} transcripts: {x.get('transcripts')}")
        if h := x.get("end_of_speech_to_answer_handed_to_player"):
            lines.append(f"{'':<25} → answer handed to its player p50 {h.get('p50_ms')} ms p95 {h.get('p95_ms')} ms")
    s = r["start_conversation_to_prompt_audio"]
    lines.append(
        f"start_conversation → prompt audio at the edge: p50 {s.get('p50_ms')} ms p95 {s.get('p95_ms')} ms;"
        f" the command after it answered {r['start_conversation_commands_answered']}"
    )
    lines.append(f"load average {' '.join(r.get('loadavg', []))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--debug", action="store_true", help="the ESPHome device's timing log lines")
    ap.add_argument(
        "--lva",
        type=Path,
        metavar="CHECKOUT",
        help="a linux-voice-assistant checkout to run beside the room devices (git clone "
        "https://github.com/OHF-Voice/linux-voice-assistant; needs libmpv2 and PulseAudio)",
    )
    ap.add_argument("--lva-python", type=Path, metavar="PY", help="its Python (default CHECKOUT/.venv/bin/python)")
    add_out(ap, ROOT / "benchmarks" / "results" / "esphome.json")
    a = ap.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("sensorium.esphome").setLevel(logging.DEBUG if a.debug else logging.INFO)
    res = write_results(a.out, lambda: run(a.quick, a.lva, a.lva_python))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
