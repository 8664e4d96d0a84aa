"""What a check finds: one ``Finding`` per thing checked, and how the CLI prints a list of them."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass
from typing import Any, Literal

Status = Literal["PASS", "WARN", "FAIL", "SKIP"]


@dataclass
class Finding:
    """The result of one check."""

    status: Status
    """PASS, WARN (works, but look at it), FAIL (will not work) or SKIP (not applicable here)."""
    check: str
    """What was checked, e.g. "microphone kitchen-pi"."""
    detail: str
    """What was seen."""
    fix: str = ""
    """What to do about it (empty for a pass)."""


Checks = Generator[Finding, None, Any]
"""A check: yields its findings as it makes them (the CLI prints each at once); some return a value to
the check that runs them (``check_devices`` the device the worker will use)."""


def format_findings(findings: list[Finding], color: bool = False) -> Iterator[str]:
    """The findings as aligned lines, each failure followed by its fix."""
    colors = {"PASS": "\033[32m", "WARN": "\033[33m", "FAIL": "\033[31m", "SKIP": "\033[2m"}
    width = max(max((len(f.check) for f in findings), default=0), 22)
    for f in findings:
        tag = f"{colors[f.status]}{f.status}\033[0m" if color else f.status
        yield f"{tag}  {f.check:<{width}}  {f.detail}"
        if f.fix and f.status in ("FAIL", "WARN"):
            yield f"{'':4}  {'':<{width}}  fix: {f.fix}"


def summary(findings: list[Finding]) -> str:
    counts = {s: sum(f.status == s for f in findings) for s in ("PASS", "WARN", "FAIL", "SKIP")}
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "nothing checked"


def to_dicts(findings: list[Finding]) -> list[dict[str, str]]:
    return [asdict(f) for f in findings]
