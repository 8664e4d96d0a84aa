"""Load a deployment file with every stage's options checked against the stage registry."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ConfigError, Deployment, from_dict, load
from sensorium.registry import STAGES, stage_class


def stage_options() -> tuple[dict[str, type], dict[str, float]]:
    """Options structs and default budgets (seconds) of every stage in the registry."""
    options, budgets = {}, {}
    for name in STAGES:
        try:
            cls = stage_class(name)
        except ImportError:
            continue  # stage not available in this install (e.g. an edge-only Pi)
        options[name] = cls.Options
        budgets[name] = cls.default_budget_ms / 1000.0
    return options, budgets


def load_deployment(path: str | Path) -> Deployment:
    """Read and validate ``path``; raises ``ConfigError`` naming the file, key and expectation."""
    options, budgets = stage_options()
    return load(path, options, budgets)


def deployment_from_dict(raw: dict, path: str = "<config>") -> Deployment:
    """Validate an in-memory deployment (demo, tests)."""
    options, budgets = stage_options()
    return from_dict(raw, options, budgets, path)


__all__ = ["ConfigError", "Deployment", "deployment_from_dict", "load_deployment"]
