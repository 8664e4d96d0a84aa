"""Load a deployment file with every stage's options checked against the stage registry."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from sensorium.pipeline.busguard import PublishPolicy
from sensorium.pipeline.config import ConfigError, Deployment, McpConfig, from_dict, load
from sensorium.pipeline.messages import Event
from sensorium.pipeline.placement import Serves, StageSpec, specs
from sensorium.registry import STAGES, stage_class

log = logging.getLogger("sensorium.deployment")


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


def placement_specs(dep: Deployment) -> dict[str, StageSpec]:
    """The stages the deployment runs on more than one worker, with the streams each serves (for the hub)."""
    serves: dict[str, Serves] = {}
    for name in {s for w in dep.workers.values() for s in w.runs()}:
        with contextlib.suppress(ImportError, KeyError):
            serves[name] = stage_class(name).serves  # type: ignore[assignment]
    replicas = {s: dep.replicas(s) for s in serves}
    cameras = [c for e in dep.edges.values() for c in e.cameras]
    return specs(replicas, serves, dep.rooms, cameras)


EDGE_EVENTS = frozenset({"node_status", "playback", "error"})
"""Event kinds an edge publishes (its own status, what its player did, input it refused)."""
WORKER_EVENTS = frozenset({"node_status", "budget_violation", "error"})
"""Event kinds every worker publishes besides its stages' own."""


def publish_policy(dep: Deployment) -> PublishPolicy | None:
    """Who may publish which events in this deployment (the hub refuses the rest); None for a file that
    declares no edge and no worker (a bare hub, as in tests and tools: it then checks only what is the hub's)."""
    if not dep.edges and not dep.workers:
        return None
    kinds: dict[str, frozenset[str]] = {e: EDGE_EVENTS for e in dep.edges}
    for name, w in dep.workers.items():
        emitted = set(WORKER_EVENTS)
        for stage in w.runs():
            with contextlib.suppress(ImportError, KeyError):
                emitted |= {m.kind for m in stage_class(stage).emits if issubclass(m, Event)}
        kinds[name] = frozenset(emitted)
    if dep.wyoming is not None:  # Home Assistant's questions, asked through the gateway
        kinds.setdefault(dep.wyoming.name, frozenset({"transcript"}))
    # the MCP server logs every agent's call as an ``mcp_call`` event (its defaults apply without ``[mcp]``)
    kinds.setdefault((dep.mcp or McpConfig()).name, frozenset({"mcp_call", "error"}))
    sources = {room: set(names) for room, names in dep.sources().items()}
    owners: dict[str, str] = {}
    for name, edge in dep.edges.items():
        for cam in edge.cameras:
            sources.setdefault(edge.room, set()).add(cam)
            owners.setdefault(cam, name)
    if dep.wyoming is not None:
        owners.update({s: dep.wyoming.name for s in dep.wyoming.stream_names()})
    return PublishPolicy(
        rooms=frozenset(dep.rooms),
        kinds=kinds,
        edge_room={n: e.room for n, e in dep.edges.items()},
        sources={room: frozenset(names) for room, names in sources.items()},
        owners=owners,
    )


def load_deployment(path: str | Path, *, check_graph: bool = True) -> Deployment:
    """Read and validate ``path``; raises ``ConfigError`` naming the file, key and expectation.

    The stage graph is checked too: each mismatch (a consumed type nothing produces, a stream nothing
    consumes) is logged as a warning naming the stage and the type; ``sensorium graph`` shows them all.
    """
    options, budgets = stage_options()
    dep = load(path, options, budgets)
    if check_graph:
        _log_graph(dep)
    return dep


def deployment_from_dict(raw: dict, path: str = "<config>") -> Deployment:
    """Validate an in-memory deployment (demo, tests)."""
    options, budgets = stage_options()
    return from_dict(raw, options, budgets, path)


def _log_graph(dep: Deployment) -> None:
    from sensorium.graph import check

    for issue in check(dep):
        log.warning("%s: %s", dep.path, issue.text)


__all__ = ["ConfigError", "Deployment", "deployment_from_dict", "load_deployment"]
