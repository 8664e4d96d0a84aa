"""``--out`` of every benchmark: the JSON file it writes, checked before any measuring starts.

A benchmark measures for minutes; a path it cannot write (a folder, a read-only place) must fail
at once with a message naming it, not after the numbers are in. ``python -m benchmarks`` (all of
them) takes a folder instead, as ``--results-dir``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


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


def add_out(parser: argparse.ArgumentParser, default: Path) -> None:
    """The one ``--out`` option: a JSON file, default ``default``, checked when the arguments are parsed."""
    parser.add_argument(
        "--out",
        type=out_file,
        default=str(default),
        metavar="FILE.json",
        help=f"JSON file to write the results to, checked writable before measuring (default: {default})",
    )
