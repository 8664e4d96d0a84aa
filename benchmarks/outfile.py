"""``--out`` of every benchmark: the JSON file it writes, checked before any measuring starts, and written
as the benchmark goes.

A benchmark measures for minutes; a path it cannot write (a folder, a read-only place) must fail
at once with a message naming it, not after the numbers are in. ``python -m benchmarks`` (all of
them) takes a folder instead, as ``--results-dir``, and names each benchmark's file in it.

A long benchmark keeps what it measured: after each finished part it calls ``checkpoint(results)``,
which rewrites the file being written (``writing(path)``, set by ``write_results`` around the run) with
the results so far and ``"partial": true``; the last write has no ``partial`` key. Each write goes to a
temporary file renamed over the old one, so a run killed at any moment leaves the last finished parts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

_writing: list[Path] = []


def out_file(value: str) -> Path:
    """argparse ``type=`` for ``--out``: a writable file path (its folder is created), else a usage error."""
    path = Path(value)
    if path.is_dir() or value.endswith(("/", os.sep)):
        raise argparse.ArgumentTypeError(f"{value} is a folder; give the JSON file to write (e.g. {path / 'run.json'})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            if not os.access(path, os.W_OK):
                raise PermissionError(f"{path} is not writable")
        else:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".check"):
                pass
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot write {value}: {exc}") from None
    return path


def add_out(parser: argparse.ArgumentParser, default: Path | None, default_text: str = "") -> None:
    """The one ``--out`` option: a JSON file, default ``default``, checked when the arguments are parsed.

    ``default`` None: the benchmark picks the file from its other options (``default_text`` says how)."""
    parser.add_argument(
        "--out",
        type=out_file,
        default=str(default) if default is not None else None,
        metavar="FILE.json",
        help="JSON file the results are written to as the run goes, checked writable before measuring "
        f"(default: {default if default is not None else default_text})",
    )


def dump(path: Path, results: Any) -> None:
    """Write ``results`` as JSON to ``path`` at once: a temporary file beside it, renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as an ordinary write would make it, not mkstemp's 0600
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def writing(path: Path | None) -> Iterator[None]:
    """While inside, ``checkpoint`` writes the results so far to ``path`` (None: nowhere)."""
    if path is None:
        yield
        return
    _writing.append(path)
    try:
        yield
    finally:
        _writing.remove(path)


def checkpoint(results: dict[str, Any]) -> None:
    """A part of the benchmark finished: write ``results`` so far (``"partial": true``) to the file being written."""
    if _writing:
        dump(_writing[-1], {**results, "partial": True})


def write_results(path: Path, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run the benchmark with ``checkpoint`` writing to ``path``, then write its whole results there."""
    with writing(path):
        results = run()
    dump(path, results)
    return results


def run_and_report(path: Path, run: Callable[[], dict[str, Any]], render: Callable[[dict[str, Any]], str]) -> int:
    """A benchmark's command line after its options: ``write_results``, its table printed, where it went; 0."""
    results = write_results(path, run)
    print(render(results))
    print(f"\nwrote {path}")
    return 0
