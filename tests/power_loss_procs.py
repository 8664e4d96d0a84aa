"""Helper processes for ``test_power_loss.py``, run as ``python tests/power_loss_procs.py KIND …``.

``subscriber ADDRESS OUT`` is a reasoning loop's event consumer that survives ``kill -9``: each event
goes to OUT with one append-and-fsync, and on start it resumes after the last complete line (a torn
last line is cut off), so every event the hub logged must arrive exactly once across restarts.

``gallery-writer GALLERY LOG`` keeps enrolling embeddings into the real SQLite gallery and appends
each committed row count to LOG: an enrolment in progress at the moment of the power cut.

``durable-hub CONFIG JOURNAL`` runs ``sensorium hub`` and appends the event log's size to JOURNAL
each time an fsync of it returns: what a power cut cannot take back. A SIGKILL keeps the page cache,
so the test then cuts the log at a random byte after that size to play the power cut.

``events-publisher ADDRESS`` publishes ``wake`` events as fast as a busy house never would.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.chaos import subscriber  # the chaos runs use the same client


def gallery_writer(path: Path, log: Path) -> None:
    import numpy as np

    from sensorium.models.gallery import Gallery

    rng = np.random.default_rng(os.getpid())
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with Gallery(path) as g:
        while True:
            v = rng.standard_normal(256).astype(np.float32)
            g.add(f"person{int(rng.integers(5))}", "voice", "power-loss-test", v / np.linalg.norm(v))
            os.write(fd, f"{g.count('voice')}\n".encode())
            time.sleep(0.005)


def durable_hub(config: str, journal: Path) -> int:
    real_fsync = os.fsync
    jfd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def fsync(fd: int) -> None:
        real_fsync(fd)
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if path.endswith("events.jsonl"):
            os.write(jfd, b"%d\n" % os.fstat(fd).st_size)

    os.fsync = fsync
    from sensorium.cli import main as sensorium

    return sensorium(["hub", "--config", config])


async def events_publisher(address: str) -> None:
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.clock import Clock
    from sensorium.pipeline.messages import WakeDetected

    pub = Publisher(Endpoints.from_address(address))
    clock = Clock()
    i = 0
    while True:
        for _ in range(5):  # small bursts: several events reach the hub together
            i += 1
            await pub.publish(WakeDetected(room="kitchen", source="burst", time=clock.now(), word=f"e{i}", score=0.9))
        await asyncio.sleep(0.01)


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    kind, *args = sys.argv[1:]
    if kind == "subscriber":
        asyncio.run(subscriber(args[0], Path(args[1])))
    elif kind == "gallery-writer":
        gallery_writer(Path(args[0]), Path(args[1]))
    elif kind == "durable-hub":
        sys.exit(durable_hub(args[0], Path(args[1])))
    elif kind == "events-publisher":
        asyncio.run(events_publisher(args[0]))
    else:
        raise SystemExit(f"unknown helper {kind!r}")


if __name__ == "__main__":
    main()
