"""The console: unknowns clustered and named on a labelled session, and the page's speed with a full log.

* **inbox** (real models, in-process): a labelled session with three unknown people. Their faces are
  real photos (the astronaut, the two people of ``zidane.jpg``) in six changed copies each (light,
  blur, JPEG damage, mirror, dark, reframed), every copy on a new camera (a new track), through the real
  person detector and face stage onto a real hub; the console embeds each unknown with the face
  model the workers use and clusters it. Reported: clusters found against the three true people,
  purity (share of samples in their cluster's majority person), and the clicks to name each person
  in the page (name field, consent, Name = 3; each extra cluster of the same person costs a merge,
  2 clicks). Then voices (flite voices, one per person, through the real speaker model) speak while
  the now-named faces are in rooms: three utterances each while the speaker is the only known face
  in the room, one of person 1 while only person 3 is on camera (misleading evidence) and one of
  person 3 in a room without a camera: cross-modal proposals right, wrong and withheld.
* **speed**: ``sensorium console`` as its own process against a real hub holding 10,000 events (a
  home's mix); each page and API call 200 times: p50/p95 ms, and the console process's RSS.

``python -m benchmarks --only console``; results in ``benchmarks/results/console.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):  # the console rig and the test images live with the tests
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.outfile import add_out, write_results  # noqa: E402  (after the path set-up above)

#: Changed copies of each photo; not "rotate": its reflected border puts a mirrored partial copy of the person
#: into the frame, a second face the labels cannot name.
AUGMENT = ("bright", "blur", "jpeg", "mirror", "dark", "reframe")
VOICES = {"P1": "flite:slt", "P2": "flite:rms", "P3": "flite:awb"}
LINES = ["turn on the lights", "what is the weather tomorrow", "play some music in here", "set a timer"]


def inbox(quick: bool = False) -> dict[str, Any]:
    import images
    import numpy as np
    from console_rig import Rig

    from sensorium.enrollment import ConsoleIdentity, Galleries
    from sensorium.evaluation.media import speech
    from sensorium.models.detector import PersonDetector
    from sensorium.nodes.face import FaceOptions, FaceStage
    from sensorium.pipeline.messages import (
        Box,
        Detections,
        FaceRecognized,
        Presence,
        SpeakerIdentified,
        Utterance,
        VideoFrame,
    )
    from sensorium.pipeline.stage import StageContext

    tmp = Path(tempfile.mkdtemp(prefix="console-bench-"))
    gallery = tmp / "gallery.db"
    identity = ConsoleIdentity(Galleries(voice=gallery, face=gallery, face_model="facenet"))
    rig = Rig(tmp, identity=identity)
    truth: dict[tuple[str, int], str] = {}
    try:
        detector = PersonDetector()
        out: list[Any] = []

        async def emit(msg: Any) -> None:
            out.append(msg)

        stage = FaceStage(
            StageContext(
                name="face", worker="bench", options=FaceOptions(recognizer="facenet"), data_dir=tmp, emit=emit
            )
        )
        rig.call(stage.start())

        def play(img: np.ndarray, camera: str, seq: int, who: Any) -> None:
            boxes = detector.track([img], [f"kitchen/{camera}"])[0]
            h, w = img.shape[:2]
            frame = VideoFrame(
                seq=seq, time=time.time(), room="kitchen", source=camera, width=w, height=h, data=images.jpeg(img, 90)
            )
            det = Detections(
                seq=seq,
                time=frame.time,
                room="kitchen",
                source="detect",
                camera=camera,
                persons=len(boxes),
                boxes=[Box(b.x1, b.y1, b.x2, b.y2, b.score, b.track) for b in boxes],
                frame_seq=seq,
            )
            for b in det.boxes:
                truth[(camera, b.track)] = who((b.x1 + b.x2) / 2 / w)
            n = len(out)
            rig.call(stage.handle(frame))
            rig.call(stage.handle(det))
            faces = [m for m in out[n:] if isinstance(m, FaceRecognized)]
            rig.publish(frame, det)
            time.sleep(0.2)
            rig.publish(*faces)

        astronaut, zidane = images.load(images.ASTRONAUT), images.load(images.ZIDANE)
        kinds = AUGMENT[:3] if quick else AUGMENT
        seq = 0
        for i, kind in enumerate(kinds):
            seq += 1
            play(images.augment(astronaut, kind), f"cam-a{i}", seq, lambda x: "P1")
            seq += 1
            mirrored = kind == "mirror"
            play(images.augment(zidane, kind), f"cam-z{i}", seq, lambda x, m=mirrored: "P2" if (x < 0.5) != m else "P3")
        deadline = time.monotonic() + 120
        while rig.console._work.qsize() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2.0)  # the last sample's embedding
        clusters = rig.store.clusters("open")
        members: dict[int, Counter[str]] = {}
        for c in clusters:
            members[c.id] = Counter(truth.get((e["camera"], e["track"]), "?") for e in rig.store.sample_events(c.id))
        samples = sum(sum(m.values()) for m in members.values())
        purity = sum(m.most_common(1)[0][1] for m in members.values()) / samples if samples else 0.0
        by_person: dict[str, list[int]] = {}
        for cid, m in members.items():
            by_person.setdefault(m.most_common(1)[0][0], []).append(cid)
        # A user names each person's largest cluster: name field, consent, Name (3 clicks). The page offers
        # the similar clusters ticked: each wrong one costs a click to untick; a cluster of the person that is
        # not offered costs a merge (pick it, Merge into: 2 clicks).
        clicks: dict[str, int] = {}
        named: set[int] = set()
        for person, cids in sorted(by_person.items(), key=lambda kv: -max(sum(members[c].values()) for c in kv[1])):
            cids = [c for c in cids if c not in named]
            if not cids:
                continue
            cids.sort(key=lambda c: -sum(members[c].values()))
            head = cids[0]
            offered = [o for o, _ in rig.console.similar(head)]
            also = [o for o in offered if o in cids]
            wrong = [o for o in offered if o not in cids]
            for extra in cids[1:]:
                if extra not in also:
                    status, body = rig.post(f"api/clusters/{extra}/merge", json.dumps({"into": head}).encode())
                    assert status == 200, body
            body_json = {"name": person, "consent": "bench", "also": also}
            status, body = rig.post(f"api/clusters/{head}/name", json.dumps(body_json).encode())
            assert status == 200, body
            named.update(cids)
            clicks[person] = 3 + len(wrong) + 2 * (len(cids) - 1 - len(also))
        with_faces = identity.people()

        # voices while the named faces are in rooms
        cache = ROOT / ".cache" / "speech"
        cache.mkdir(parents=True, exist_ok=True)
        voice_truth: dict[str, str] = {}

        def say(room: str, person: str, text: str) -> None:
            pcm = speech(text, VOICES[person], cache)
            uid = uuid.uuid4().hex[:12]
            voice_truth[uid] = person
            rig.publish(Utterance(room=room, source="stt", utterance_id=uid, data=pcm.astype("<i2").tobytes()))
            time.sleep(0.1)
            rig.publish(SpeakerIdentified(room=room, source="speaker", utterance_id=uid, person="unknown", score=0.3))

        for person, room in (("P1", "kitchen"), ("P2", "office"), ("P3", "hall")):
            rig.publish(Presence(room=room, source="presence", person=person, state="entered", sources=["face"]))
        rig.publish(Presence(room="kitchen", source="presence", person="unknown", state="left", unknown=0))
        time.sleep(0.5)
        n_lines = 2 if quick else 3
        for person, room in (("P1", "kitchen"), ("P2", "office"), ("P3", "hall")):
            for text in LINES[:n_lines]:
                say(room, person, text)
        say("hall", "P1", LINES[3])  # P1 calls from the hall, where only P3 is on camera
        say("garage", "P3", LINES[3])  # no camera, nobody known there
        deadline = time.monotonic() + 120
        while rig.console._work.qsize() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3.0)
        right = wrong = withheld = 0
        voice_clusters = []
        for c in rig.store.clusters("open"):
            if c.kind != "voice":
                continue
            people = Counter(voice_truth.get(e.get("utterance_id", ""), "?") for e in rig.store.sample_events(c.id))
            majority = people.most_common(1)[0][0]
            prop = c.proposal()
            verdict = "withheld" if prop is None else ("right" if prop[0] == majority else "wrong")
            right += verdict == "right"
            wrong += verdict == "wrong"
            withheld += verdict == "withheld"
            voice_clusters.append(
                {
                    "cluster": c.id,
                    "people": dict(people),
                    "evidence": c.evidence,
                    "proposal": prop and prop[0],
                    "verdict": verdict,
                }
            )
        rig.call(stage.stop())
        return {
            "true_people": 3,
            "face_samples": samples,
            "face_clusters": len(clusters),
            "cluster_members": {str(k): dict(v) for k, v in members.items()},
            "purity": round(purity, 3),
            "clicks_to_name": clicks,
            "enrolled": with_faces,
            "voice_clusters": voice_clusters,
            "proposals_right": right,
            "proposals_wrong": wrong,
            "proposals_withheld": withheld,
        }
    finally:
        rig.close()


def speed(quick: bool = False) -> dict[str, Any]:
    import psutil

    from sensorium.evaluation.ports import free_port, free_tcp_base
    from sensorium.pipeline.bus import Endpoints, Publisher
    from sensorium.pipeline.config import HubConfig
    from sensorium.pipeline.hub import Hub
    from sensorium.pipeline.messages import (
        Detections,
        FaceRecognized,
        NodeStatus,
        Presence,
        SpeakerIdentified,
        Transcript,
    )
    from sensorium.pipeline.metrics import summary

    n_events = 2000 if quick else 10000
    tmp = Path(tempfile.mkdtemp(prefix="console-speed-"))
    base = free_tcp_base()
    address = f"tcp://127.0.0.1:{base}"
    port = free_port()
    (tmp / "deploy.toml").write_text(
        f'data_dir = "{tmp}/data"\n[hub]\naddress = "{address}"\n[rooms.kitchen]\n[rooms.office]\n'
        '[edges.kitchen-pi]\nroom = "kitchen"\n[edges.office-pi]\nroom = "office"\n'
    )
    result: dict[str, Any] = {"events": n_events}

    async def main() -> None:
        hub = Hub(HubConfig(address=address, event_log=n_events + 1000), state_dir=tmp / "state")
        await hub.start()
        pub = Publisher(Endpoints.from_address(address))
        await asyncio.sleep(0.3)
        rooms, people = ["kitchen", "office"], ["alice", "bob", "carol", "unknown"]
        t = time.time() - n_events
        for i in range(n_events):
            room, person = rooms[i % 2], people[i % 4]
            kind = i % 6
            if kind == 0:
                m: Any = Presence(room=room, person=person, state="present", sources=["face"], confidence=0.8)
            elif kind == 1:
                m = Transcript(room=room, final=True, text=f"utterance number {i}", speaker=person, speaker_score=0.8)
            elif kind == 2:
                m = SpeakerIdentified(room=room, person=person, score=0.8)
            elif kind == 3:
                m = FaceRecognized(room=room, camera=f"{room}-cam", person=person, score=0.7, track=i)
            elif kind == 4:
                m = Detections(room=room, camera=f"{room}-cam", persons=1)
            else:
                m = NodeStatus(node=f"{room}-pi", role="edge", state="up")
            m.time, m.source = t + i, "bench"
            await pub.publish(m)
            if i % 500 == 499:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        proc = await asyncio.to_thread(
            subprocess.Popen,
            [str(ROOT / ".venv/bin/sensorium"), "console", "--config", str(tmp / "deploy.toml"), "--port", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}/"
        try:
            ps = psutil.Process(proc.pid)
            t0 = time.monotonic()
            while True:
                try:
                    body = await asyncio.to_thread(lambda: urllib.request.urlopen(url + "api/events?limit=1").read())
                    if json.loads(body)["events"] and json.loads(body)["events"][0]["seq"] >= n_events:
                        break
                except OSError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"console exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
                await asyncio.sleep(0.2)
            result["catch_up_s"] = round(time.monotonic() - t0, 2)
            result["rss_mib_after_catch_up"] = round(ps.memory_info().rss / 2**20, 1)
            paths = {
                "rooms page": "",
                "timeline page": "timeline",
                "timeline filtered, page 40": f"timeline?room=kitchen&type=transcript&before={n_events // 2}",
                "inbox page": "inbox",
                "health page": "health",
                "api events": "api/events?limit=50",
                "api events person filter": "api/events?person=carol&type=face",
                "api rooms": "api/rooms",
            }
            reps = 50 if quick else 200
            timings: dict[str, Any] = {}
            for label, path in paths.items():
                ms = []
                for _ in range(reps):
                    s = time.perf_counter()
                    await asyncio.to_thread(lambda p=path: urllib.request.urlopen(url + p).read())
                    ms.append((time.perf_counter() - s) * 1000)
                timings[label] = {k: v for k, v in summary(ms, digits=1, suffix="_ms").items() if k != "n"}
            result["requests"] = timings
            result["p95_ms_worst"] = max(v["p95_ms"] for v in timings.values())
            result["rss_mib_after_requests"] = round(ps.memory_info().rss / 2**20, 1)
        finally:
            proc.terminate()
            proc.wait(10)
            pub.close()
            await hub.stop()

    asyncio.run(main())
    return result


def run(quick: bool = False) -> dict[str, Any]:
    load = Path("/proc/loadavg").read_text().split()[:3]
    out = {"loadavg_start": load, "speed": speed(quick), "inbox": inbox(quick)}
    out["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    return out


def render(r: dict[str, Any]) -> str:
    s, i = r["speed"], r["inbox"]
    return "\n".join(
        [
            f"- {s['events']} events in the log: worst page/API p95 {s['p95_ms_worst']} ms; console RSS "
            f"{s['rss_mib_after_requests']} MiB (no model loaded)",
            f"- 3 unknown people: {i['face_clusters']} face clusters, purity {i['purity']}, clicks to name "
            f"{i['clicks_to_name']}; cross-modal proposals right {i['proposals_right']}, wrong {i['proposals_wrong']}, "
            f"withheld {i['proposals_withheld']}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    add_out(ap, ROOT / "benchmarks" / "results" / "console.json")
    args = ap.parse_args(argv)
    res = write_results(args.out, lambda: run(args.quick))
    print(render(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
