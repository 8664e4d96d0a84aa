"""Check a machine against the deployment file: what a node placed here needs, and what to do if not.

Each check yields ``Finding``s (PASS, WARN, FAIL or SKIP) with what was seen and, when it is not a
pass, how to fix it. The checks depend on the node's role: an edge node needs its microphone,
speaker and cameras (``edge``); a worker needs its devices, the model libraries and files of its stages
and an intact gallery (``worker``); the hub needs its ports and a healthy event log, everyone needs the
hub and keys when the bus leaves loopback (``hub``), and a sane clock (``system``). Without ``--name``
the machine is checked as the one box of a Phase-0 deployment (hub, every worker and every edge node).

Heavy libraries (torch, OpenCV, sounddevice, model packages) are imported inside the checks, so
the doctor runs on a Raspberry Pi that has only the ``edge`` extra and says what is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sensorium.cli.doctor import edge, hub, system, worker
from sensorium.cli.doctor.context import Checkup, load_any
from sensorium.cli.doctor.findings import Checks, Finding, Status, format_findings, summary, to_dicts

__all__ = ["Checkup", "Doctor", "Finding", "Status", "format_findings", "load_any", "summary", "to_dicts"]


@dataclass
class Doctor(Checkup):
    """Runs the checks that apply to ``node`` and collects their findings."""

    on_finding: Callable[[Finding], None] | None = None
    """Called with each finding as soon as its check makes it (the CLI prints as it goes)."""
    findings: list[Finding] = field(default_factory=list)

    def run(self) -> list[Finding]:
        """Run every check that applies; returns the findings (also kept in ``findings``)."""
        for f in self.checks():
            self.findings.append(f)
            if self.on_finding is not None:
                self.on_finding(f)
        return self.findings

    def checks(self) -> Checks:
        """Every check that applies to ``node``, in the order the CLI prints them."""
        with_hub, workers, edges = self.roles()
        dep = self.deployment
        yield from system.check_system(self)
        yield from system.check_config(self, workers)
        yield from system.check_graph(self)
        yield from system.check_data_dir(self)
        if with_hub:
            yield from hub.check_hub_ports(self)
            yield from hub.check_event_log(self)
            yield from hub.check_hub_keys(self)
        for name in workers:
            yield from hub.check_node_keys(self, name, dep.workers[name].keys)
        for name in edges:
            yield from hub.check_node_keys(self, name, dep.edges[name].keys)
        yield from hub.check_hub_reachable(self)
        yield from system.check_clock(self)
        yield from system.check_services(self)
        for name in edges:
            yield from edge.check_edge(self, name, dep.edges[name])
        for name in workers:
            yield from worker.check_worker(self, name, dep.workers[name])
        if workers:
            yield from worker.check_galleries(self)
