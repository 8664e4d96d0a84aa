"""Fresh-machine set-up time: a clean clone set up from empty package caches, then again warm.

Runs ``scripts/setup.sh`` in a clean ``git clone`` of this checkout's HEAD three times:

- **cold**: empty uv cache (``UV_CACHE_DIR`` in a new folder), no venvs — what a new user or CI
  without a cache pays, apart from apt (system packages already present, as the set-up leaves them);
- **warm**: the venvs deleted again, the cache from the cold run kept — a re-install on a machine
  that set up once;
- **no-op**: nothing changed — what every ``make test`` pays before the tests.

It records each run's per-step times (from the set-up's own ``setup: NAME took …`` lines), the lock
files' hash and the hash of the installed package set (``uv pip freeze``), so runs on different
days show whether they installed the identical set. Not part of ``--quick``-style CI runs: it
downloads a few GB.

    python -m benchmarks.setup            # or: python -m benchmarks --only setup
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LOCKS = ["uv.lock", "requirements/uv.txt", "requirements/peers.txt", "requirements/peers-oww.txt"]


def lock_hash(repo: Path) -> str:
    """SHA-256 over the lock files that decide what gets installed."""
    h = hashlib.sha256()
    for name in LOCKS:
        h.update(name.encode() + b"\0" + (repo / name).read_bytes())
    return h.hexdigest()


def installed_hash(repo: Path, env: dict[str, str]) -> tuple[str, int]:
    """SHA-256 of the sorted ``name==version`` list of every venv the set-up made, and its length."""
    uv = str(repo / ".cache/tools/bin/uv")
    lines: list[str] = []
    for venv in (".venv", ".venv-peers", ".venv-peers-oww"):
        out = subprocess.run(
            [uv, "pip", "freeze", "--python", str(repo / venv / "bin/python"), "--exclude-editable"],
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
        lines += [f"{venv}:{ln}" for ln in sorted(out.splitlines()) if ln and not ln.startswith("-e")]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), len(lines)


def run_setup(repo: Path, env: dict[str, str], label: str) -> dict[str, Any]:
    """One ``scripts/setup.sh`` run; its wall time and its own per-step times."""
    t0 = time.monotonic()
    res = subprocess.run(["bash", "scripts/setup.sh"], cwd=repo, env=env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"setup ({label}) failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    steps = {m.group(1): float(m.group(2)) for m in re.finditer(r"^setup: (\w+) took ([\d.]+) s$", res.stdout, re.M)}
    print(f"  {label:6s} {wall:7.1f} s  " + "  ".join(f"{k} {v:.1f}" for k, v in steps.items()), flush=True)
    return {"wall_s": round(wall, 2), "steps_s": steps}


def run(quick: bool = False) -> dict[str, Any]:
    """Clone, set up cold, warm and unchanged; return the times and hashes."""
    if quick:
        return {"skipped": "the set-up benchmark downloads a few GB; run it on its own"}
    with tempfile.TemporaryDirectory(prefix="sensorium-setup-") as tmp:
        repo = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(repo)], check=True)
        cache = Path(tmp) / "uv-cache"
        cache.mkdir()
        env = {
            **os.environ,
            "UV_CACHE_DIR": str(cache),
            "PIP_NO_CACHE_DIR": "1",  # the uv bootstrap too
        }
        env.pop("VIRTUAL_ENV", None)
        print("setup benchmark: clean clone of HEAD, empty caches", flush=True)
        runs = {"cold": run_setup(repo, env, "cold")}
        freeze_hash, n_packages = installed_hash(repo, env)
        cache_mb = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
        for venv in (".venv", ".venv-peers", ".venv-peers-oww"):
            shutil.rmtree(repo / venv, ignore_errors=True)
        runs["warm"] = run_setup(repo, env, "warm")
        runs["noop"] = run_setup(repo, env, "no-op")
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        return {
            "commit": commit,
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
            "lock_sha256": lock_hash(repo),
            "installed_sha256": freeze_hash,
            "installed_packages": n_packages,
            "download_cache_mb": round(cache_mb),
            "runs": runs,
            "note": "apt packages already present; wall times include uv's downloads from PyPI",
        }


def render(results: dict[str, Any]) -> str:
    """Markdown lines for SUMMARY.md."""
    if "runs" not in results:
        return f"set-up: {results.get('skipped', 'not run')}"
    r = results["runs"]
    return "\n".join(
        [
            "| set-up from a clean clone | wall time | steps |",
            "|---|---|---|",
            *(
                f"| {k} | {v['wall_s']:.1f} s | " + ", ".join(f"{s} {t:.1f} s" for s, t in v["steps_s"].items()) + " |"
                for k, v in r.items()
            ),
            "",
            f"{results['installed_packages']} packages, installed set sha256 `{results['installed_sha256'][:16]}`, "
            f"locks sha256 `{results['lock_sha256'][:16]}`, {results['download_cache_mb']} MiB downloaded.",
        ]
    )


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(json.dumps(out, indent=2))
    print(render(out))
