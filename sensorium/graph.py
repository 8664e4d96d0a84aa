"""The stage graph of a deployment: who produces each message type, who consumes it, where it runs.

Built from the stages' declarations (``consumes``/``emits``) and the placement: edges produce audio
(a microphone), video (cameras) and playback status (a player) and consume synthesized speech and
stop commands; clients (the reasoning loop, bridges) send commands; every worker and the hub report
errors, budget violations, status and stats; the hub's event log takes every event. ``check`` names
each consumed type nothing produces and each emitted stream nothing consumes: the mistakes that
otherwise fail silently (a stage waiting for input that never comes).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from sensorium.pipeline.config import Deployment
from sensorium.pipeline.messages import (
    COMMANDS,
    AudioChunk,
    BudgetViolation,
    Event,
    InputError,
    Message,
    NodeStatus,
    PlaybackGain,
    PlaybackStatus,
    StageStats,
    StopPlayback,
    TtsAudio,
    VideoFrame,
)
from sensorium.registry import available, stage_class

#: Produced by the runtime itself (every worker, the hub), whatever the placement.
RUNTIME_MADE: tuple[type[Message], ...] = (InputError, BudgetViolation, NodeStatus, StageStats)
CLIENTS = "clients"
EVENT_LOG = "event log"


@dataclass(frozen=True)
class Node:
    """Something in the graph: a stage on a worker, an edge node, the clients, the runtime, the event log."""

    name: str
    """``stt``, ``kitchen-pi``, ``clients`` …"""
    role: Literal["stage", "edge", "clients", "runtime", "log"]
    """What it is."""
    where: str = ""
    """The worker and device of a stage (``gpu0 (cuda:0)``), the room of an edge."""


@dataclass
class Issue:
    """A mismatch in the graph, naming the stage and the message type."""

    level: Literal["warning", "error"]
    """``error``: the stage can never get any input; ``warning``: one of its inputs or outputs goes nowhere."""
    stage: str
    """The stage it concerns."""
    text: str
    """What is wrong and what to do."""


@dataclass
class Graph:
    """Producers and consumers of every message type in one deployment."""

    nodes: list[Node] = field(default_factory=list)
    produces: dict[type[Message], list[Node]] = field(default_factory=lambda: defaultdict(list))
    consumes: dict[type[Message], list[Node]] = field(default_factory=lambda: defaultdict(list))

    def add(self, node: Node, produces: tuple[type[Message], ...], consumes: tuple[type[Message], ...]) -> None:
        self.nodes.append(node)
        for m in produces:
            self.produces[m].append(node)
        for m in consumes:
            self.consumes[m].append(node)

    def links(self) -> list[tuple[Node, type[Message], Node]]:
        """Every (producer, message type, consumer), in a stable order."""
        out = []
        for m, producers in self.produces.items():
            for p in producers:
                out += [(p, m, c) for c in self.consumes.get(m, []) if c != p]
        return out


def _type(m: type[Message]) -> str:
    return str(m.__struct_config__.tag)  # type: ignore[attr-defined]


def build(dep: Deployment) -> Graph:
    """The graph of ``dep``; stages whose code does not import here are left out."""
    from sensorium.pipeline.messages import EVENTS

    g = Graph()
    for wname, w in dep.workers.items():
        device = w.device if isinstance(w.device, str) else " or ".join(w.device)
        for sname in w.runs():  # standbys produce what they take over
            try:
                cls = stage_class(sname)
            except (ImportError, KeyError):
                continue
            g.add(Node(sname, "stage", f"{wname} ({device})"), cls.emits, cls.consumes)
    for ename, e in dep.edges.items():
        made: list[type[Message]] = []
        taken: list[type[Message]] = []
        if e.microphone is not None:
            made.append(AudioChunk)
        if e.cameras:
            made.append(VideoFrame)
        if e.playback is not None:
            made.append(PlaybackStatus)
            taken += [TtsAudio, StopPlayback, PlaybackGain]
        g.add(Node(ename, "edge", e.room), tuple(made), tuple(taken))
    clients_make: tuple[type[Message], ...] = COMMANDS
    clients_take: tuple[type[Message], ...] = (StageStats,)  # sensorium top
    if dep.wyoming is not None:  # the Wyoming gateway streams its satellites' audio and plays answers
        clients_make += (AudioChunk,)
        clients_take += (TtsAudio,)
    g.add(Node(CLIENTS, "clients", "reasoning loop, bridges, sensorium top"), clients_make, clients_take)
    g.add(Node("runtime", "runtime", "every worker and the hub"), RUNTIME_MADE, ())
    g.add(Node(EVENT_LOG, "log", "hub"), (), EVENTS)
    return g


def check(dep: Deployment, graph: Graph | None = None) -> list[Issue]:
    """Every consumed type nothing produces, every emitted stream nothing consumes, per placed stage."""
    g = graph or build(dep)
    issues: list[Issue] = []
    for node in g.nodes:
        if node.role != "stage":
            continue
        cls = stage_class(node.name)
        missing = [m for m in cls.consumes if not g.produces.get(m)]
        for m in missing:
            issues.append(
                Issue(
                    "warning",
                    node.name,
                    f"stage {node.name} on {node.where} consumes {_type(m)} ({m.kind}/) but nothing in this "
                    f"deployment produces it{_hint(m)}",
                )
            )
        if cls.consumes and len(missing) == len(cls.consumes):
            issues.append(
                Issue(
                    "error",
                    node.name,
                    f"stage {node.name} on {node.where} can never get input: nothing produces "
                    + ", ".join(_type(m) for m in missing),
                )
            )
        for m in cls.emits:
            if issubclass(m, Event) or m in RUNTIME_MADE:
                continue  # the event log takes every event
            if not [c for c in g.consumes.get(m, []) if c != node]:
                issues.append(
                    Issue(
                        "warning",
                        node.name,
                        f"stage {node.name} on {node.where} emits {_type(m)} ({m.kind}/) but nothing in this "
                        f"deployment consumes it{_hint(m)}",
                    )
                )
    return issues


_EDGE_HINTS = {
    AudioChunk: "give an edge of the room a [edges.<name>.microphone]",
    VideoFrame: "give an edge of the room [edges.<name>.cameras.<camera>]",
    TtsAudio: "give an edge of the room a [edges.<name>.playback]",
    PlaybackStatus: "give an edge of the room a [edges.<name>.playback]",
    StopPlayback: "give an edge of the room a [edges.<name>.playback]",
    PlaybackGain: "give an edge of the room a [edges.<name>.playback]",
}


def _hint(m: type[Message]) -> str:
    """What would produce or consume ``m``: an edge's device, or the stages that emit it."""
    if m in _EDGE_HINTS:
        return f": {_EDGE_HINTS[m]}"
    producers = sorted(name for name, cls in available().items() if m in cls.emits)
    return f": place {' or '.join(producers)} on a worker" if producers else ""


def text(g: Graph, issues: list[Issue]) -> str:
    """Who produces what and where it runs, one line per message type; then the issues."""
    lines = []
    types = sorted({*g.produces, *g.consumes}, key=_type)
    for m in types:
        prod = ", ".join(_label(n) for n in g.produces.get(m, [])) or "(nobody)"
        cons = ", ".join(_label(n) for n in g.consumes.get(m, [])) or "(nobody)"
        lines.append(f"{_type(m):<16} {m.kind + '/':<14} {prod}  →  {cons}")
    if issues:
        lines.append("")
        lines += [f"{i.level.upper()}: {i.text}" for i in issues]
    return "\n".join(lines)


def _label(n: Node) -> str:
    return f"{n.name} [{n.where}]" if n.role == "stage" else n.name


def _id(n: Node) -> str:
    return f"{n.role}_{''.join(c if c.isalnum() else '_' for c in n.name)}"


def mermaid(g: Graph) -> str:
    """The graph as a Mermaid flowchart: stages grouped by worker, links labelled with the message type."""
    out = ["flowchart LR"]
    by_where: dict[str, list[Node]] = defaultdict(list)
    for n in g.nodes:
        if n.role == "stage":
            by_where[n.where].append(n)
        elif n.role in ("edge", "clients"):
            shape = f'(["{n.name}"])' if n.role == "edge" else f'[/"{n.name}"/]'
            out.append(f"  {_id(n)}{shape}")
    for where, nodes in by_where.items():
        out.append(f'  subgraph {"".join(c if c.isalnum() else "_" for c in where)}["{where}"]')
        out += [f'    {_id(n)}["{n.name}"]' for n in nodes]
        out.append("  end")
    out += [f"  {_id(p)} -->|{_type(m)}| {_id(c)}" for p, m, c in g.links() if c.role != "log" and p.role != "runtime"]
    return "\n".join(out) + "\n"


def dot(g: Graph) -> str:
    """The graph in Graphviz DOT: stages clustered by worker."""
    out = ["digraph sensorium {", "  rankdir=LR;"]
    by_where: dict[str, list[Node]] = defaultdict(list)
    for n in g.nodes:
        if n.role == "stage":
            by_where[n.where].append(n)
        elif n.role in ("edge", "clients"):
            out.append(f'  {_id(n)} [label="{n.name}", shape={"box" if n.role == "edge" else "parallelogram"}];')
    for k, (where, nodes) in enumerate(by_where.items()):
        out.append(f'  subgraph cluster_{k} {{ label="{where}";')
        out += [f'    {_id(n)} [label="{n.name}", shape=ellipse];' for n in nodes]
        out.append("  }")
    out += [
        f'  {_id(p)} -> {_id(c)} [label="{_type(m)}"];'
        for p, m, c in g.links()
        if c.role != "log" and p.role != "runtime"
    ]
    out.append("}")
    return "\n".join(out) + "\n"
