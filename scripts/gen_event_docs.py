"""Regenerate docs/events.md's field tables and its list of event types from the event classes.

Run: .venv/bin/python scripts/gen_event_docs.py   (tests/test_docs.py fails when the doc is stale)
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
import sys
from pathlib import Path

from sensorium.pipeline import messages as m

DOC = Path(__file__).resolve().parent.parent / "docs" / "events.md"
BEGIN, END = "<!-- BEGIN GENERATED EVENT TABLES -->", "<!-- END GENERATED EVENT TABLES -->"


def field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not hasattr(klass, "__struct_fields__"):
            continue
        try:
            body = ast.parse(inspect.getsource(klass)).body[0].body  # type: ignore[attr-defined]
        except (OSError, TypeError):
            continue
        for a, b in itertools.pairwise(body):
            if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
                docs[a.target.id] = str(b.value.value)  # type: ignore[union-attr]
    return docs


def annotation(cls: type, name: str) -> str:
    for k in cls.__mro__:
        ann = getattr(k, "__annotations__", {})
        if name in ann:
            return str(ann[name]).replace("|", "\\|")
    return ""


def tables() -> str:
    out = []
    for cls in m.EVENTS + m.CLIENT_EVENTS:
        tag = cls.__struct_config__.tag
        doc = (cls.__doc__ or "").strip().split("\n\n")
        out.append(f"### `{tag}` — {doc[0]}\n")
        out.extend(f"{' '.join(p.split())}\n" for p in doc[1:])
        if cls in m.CLIENT_EVENTS:
            out.append(
                "Never on the bus: `Client.events()` (and `sensorium events`) yields it where the events were.\n"
            )
        else:
            out.append(f"Topic on the bus: `{cls.kind}/<room>/<source>`\n")
        out.append("| field | type | meaning |\n|---|---|---|")
        docs = field_docs(cls)
        for f in cls.__struct_fields__:
            out.append(f"| `{f}` | `{annotation(cls, f)}` | {docs.get(f, '')} |")
        out.append("")
    return "\n".join(out)


def type_row() -> str:
    """The ``type`` row of the common fields: every event type on the bus, from the classes."""
    return "| `type` | " + ", ".join(f"`{cls.__struct_config__.tag}`" for cls in m.EVENTS) + " |"


def render(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    head = re.sub(r"^\| `type` \| .*\|$", lambda _: type_row(), head, count=1, flags=re.M)
    return f"{head}{BEGIN}\n{tables()}\n{END}{tail}"


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    print(f"wrote {DOC}")
    sys.exit(0)
