"""The stages: every module of ``nodes/`` is one, named after its module, imported only when needed.

This is the wiring's map; ``pipeline`` never imports ``nodes``. A stage is declared once, on its class
(name, options, what it consumes and emits, budget, degrade steps, libraries, answers), and found here
by its module's name: ``nodes/wake.py`` (or the package ``nodes/wake/``) holds the stage ``wake``.
Modules whose name starts with ``_`` are helpers, not stages. Node modules import their model
libraries lazily (inside ``start``), so importing a stage class is cheap even on a Raspberry Pi, and
listing the stages imports nothing.
"""

from __future__ import annotations

import importlib
import pkgutil

from sensorium import nodes
from sensorium.pipeline.stage import Stage


def _discover() -> dict[str, str]:
    found = pkgutil.iter_modules(nodes.__path__)
    return {m.name: f"{nodes.__name__}.{m.name}" for m in found if not m.name.startswith("_")}


STAGES: dict[str, str] = _discover()
"""Stage name → the module that holds it."""


def stage_class(name: str) -> type[Stage]:
    """The class implementing stage ``name``; ``KeyError`` names the known stages."""
    try:
        module = importlib.import_module(STAGES[name])
    except KeyError:
        raise KeyError(f"unknown stage {name!r} (known: {', '.join(sorted(STAGES))})") from None
    found = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Stage) and v.__module__ == module.__name__ and v.name == name
    ]
    if len(found) != 1:
        raise TypeError(f"{module.__name__} must define exactly one Stage subclass with name = {name!r}")
    return found[0]


def available() -> dict[str, type[Stage]]:
    """Every stage whose module imports here."""
    out: dict[str, type[Stage]] = {}
    for name in STAGES:
        try:
            out[name] = stage_class(name)
        except ImportError:
            continue
    return out
