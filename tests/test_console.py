"""The console against a real hub, over HTTP: rooms, timeline paging and filters, the unknowns inbox
(name, ignore, merge, undo, cross-modal proposals), a person's removal, access and media rules.

Embeddings here are handed to the console (``Console.keep``) so the clustering and the actions are
checked on known vectors; tests/test_console_browser.py embeds real faces with the real models.
"""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from console_rig import Rig

from sensorium.bridges.console.app import Access
from sensorium.bridges.console.service import Embedding
from sensorium.models.gallery import Gallery
from sensorium.pipeline.config import ConfigError, ConsoleConfig, from_dict
from sensorium.pipeline.messages import (
    FaceRecognized,
    NodeStatus,
    Presence,
    SpeakerIdentified,
    Transcript,
)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def person_vectors(seed: int, n: int, dim: int = 128, noise: float = 0.25) -> list[np.ndarray]:
    """``n`` embeddings of one synthetic identity: a direction plus noise (cosine to it ≈ 0.9)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim)
    base /= np.linalg.norm(base)
    out = []
    for _ in range(n):
        v = base + noise * rng.normal(size=dim) / np.sqrt(dim)
        out.append((v / np.linalg.norm(v)).astype(np.float32))
    return out


def keep(rig: Rig, ev: FaceRecognized | SpeakerIdentified, vec: np.ndarray, media: bytes | None = b"\xff\xd8x") -> int:
    """Publish an unknown's event and hand the console its embedding, as the models would."""
    before = rig.store.last_seq
    rig.publish(ev)
    rig.wait(lambda: rig.store.last_seq > before, what="event kept")
    seq = rig.store.last_seq
    ev.seq = seq
    kind = "face" if isinstance(ev, FaceRecognized) else "voice"
    emb = Embedding(vector=vec, model_id=f"test-{kind}", media=media)
    return int(rig.call(rig.console.keep(ev, kind, emb, "jpg" if kind == "face" else "wav")))


def api(rig: Rig, path: str) -> dict:
    status, body = rig.get(path)
    assert status == 200, body
    return json.loads(body)


def test_rooms_fill_from_presence_and_show_nodes(rig: Rig) -> None:
    rig.publish(
        Presence(room="kitchen", source="presence", person="alice", state="entered", confidence=0.91, sources=["face"]),
        Presence(room="kitchen", source="presence", person="unknown", state="entered", people=2, unknown=1),
        Presence(room="office", source="presence", person="bob", state="entered", confidence=0.7, sources=["voice"]),
        NodeStatus(source="gpu0", node="gpu0", role="worker", state="up", detail="serving"),
    )
    rig.wait(lambda: "bob" in rig.get("api/rooms")[1].decode(), what="bob in the office")
    rooms = api(rig, "api/rooms")["rooms"]
    assert rooms["kitchen"]["people"]["alice"]["sources"] == ["face"]
    assert rooms["kitchen"]["unknown"] == 1
    _, page = rig.get("/")
    text = page.decode()
    assert "alice" in text and "unknown 1" in text and "gpu0" in text
    # alice walks to the office: she is in one room only
    rig.publish(Presence(room="office", source="presence", person="alice", state="entered", sources=["face"]))
    rig.wait(lambda: "alice" in api(rig, "api/rooms")["rooms"]["office"]["people"], what="alice in the office")
    assert "alice" not in api(rig, "api/rooms")["rooms"]["kitchen"]["people"]


def test_timeline_pages_and_filters_the_hub_log(rig: Rig) -> None:
    for i in range(120):
        room = "kitchen" if i % 2 else "office"
        rig.publish(
            Transcript(room=room, source="stt", final=True, text=f"line {i}", speaker="alice", speaker_score=0.8)
        )
    rig.publish(SpeakerIdentified(room="kitchen", source="speaker", person="bob", score=0.81))
    rig.wait(lambda: rig.store.last_seq >= 121, what="all events kept")
    first = api(rig, "api/events?type=transcript&room=kitchen&limit=50")
    assert len(first["events"]) == 50 and all(e["room"] == "kitchen" for e in first["events"])
    assert first["events"][0]["text"] == "line 119"
    second = api(rig, f"api/events?type=transcript&room=kitchen&limit=50&before={first['next']}")
    assert second["events"][0]["text"] == "line 19"
    assert len(second["events"]) == 10 and second["next"] is None
    assert [e["person"] for e in api(rig, "api/events?person=bob")["events"]] == ["bob"]
    _, page = rig.get("timeline?room=office&type=transcript")
    assert "line 118" in page.decode() and "line 119" not in page.decode()
    status, body = rig.get("api/events?before=abc")
    assert status == 400 and b"before" in body


def test_inbox_clusters_names_ignores_merges_and_undoes(rig: Rig, tmp_path: Path) -> None:
    a, b, c = person_vectors(1, 4), person_vectors(2, 4), person_vectors(3, 3)
    ids = {
        who: {
            keep(rig, FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=i), v)
            for v in vs
        }
        for i, (who, vs) in enumerate((("a", a), ("b", b), ("c", c)))
    }
    assert all(len(s) == 1 for s in ids.values()), ids  # one cluster per person
    ca, cb, cc = (next(iter(ids[w])) for w in "abc")
    clusters = api(rig, "api/clusters")["clusters"]
    assert sorted(x["samples"] for x in clusters) == [3, 4, 4]

    status, body = rig.post(f"api/clusters/{ca}/name", b'{"name": "carol", "consent": ""}')
    assert status == 400 and b"consent" in body
    status, body = rig.post(f"api/clusters/{ca}/name", b'{"name": "carol", "consent": "asked in person"}')
    assert status == 200, body
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"carol": {"face": 4}}
        assert g.identify("face", "test-face", a[0], 0.5)[0] == "carol"

    assert rig.post(f"api/clusters/{cb}/ignore")[0] == 200
    # the ignored face comes back: it joins its ignored cluster and is not proposed again
    keep(
        rig,
        FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=9),
        person_vectors(2, 5)[4],
    )
    assert cb not in [x["id"] for x in api(rig, "api/clusters")["clusters"]]
    assert [x["id"] for x in api(rig, "api/clusters?status=ignored")["clusters"]] == [cb]

    # merge needs two open clusters of one kind; split c by hand first
    extra = keep(
        rig,
        FaceRecognized(room="office", source="face", camera="cam2", person="unknown", track=3),
        person_vectors(4, 1)[0],
    )
    assert rig.post(f"api/clusters/{extra}/merge", json.dumps({"into": cc}).encode())[0] == 200
    assert [x["samples"] for x in api(rig, "api/clusters")["clusters"]] == [4]
    # undo: the merge, then the ignore, then the naming (its embeddings leave the gallery)
    for _ in range(3):
        assert rig.post("api/undo")[0] == 200
    assert sorted(x["id"] for x in api(rig, "api/clusters")["clusters"]) == sorted([ca, cb, cc, extra])
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {}
    assert json.loads(rig.post("api/undo")[1])["done"] == "nothing to undo"


def test_naming_takes_the_similar_clusters_along_and_undo_splits_them_again(rig: Rig, tmp_path: Path) -> None:
    vs = person_vectors(31, 3)
    centre = np.mean(vs, axis=0) / np.linalg.norm(np.mean(vs, axis=0))
    orth = person_vectors(32, 1)[0]
    orth = orth - (orth @ centre) * centre
    orth /= np.linalg.norm(orth)
    near = 0.45 * centre + np.sqrt(1 - 0.45**2) * orth  # below the 0.5 threshold, within the 0.1 margin
    other = person_vectors(33, 1)[0]
    other = other - (other @ centre) * centre - (other @ orth) * orth
    other /= np.linalg.norm(other)
    far = 0.2 * centre + np.sqrt(1 - 0.2**2) * other
    face = lambda track: FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=track)  # noqa: E731
    head = {keep(rig, face(1), v) for v in vs}.pop()
    close = keep(rig, face(2), near.astype(np.float32))
    keep(rig, face(3), far.astype(np.float32))
    clusters = {c["id"]: c for c in api(rig, "api/clusters")["clusters"]}
    assert len(clusters) == 3
    assert [s["cluster"] for s in clusters[head]["similar"]] == [close]
    _, page = rig.get("inbox")
    assert f'class="also-{head}" value="{close}"' in page.decode()
    body = json.dumps({"name": "erin", "consent": "yes", "also": [close]}).encode()
    assert rig.post(f"api/clusters/{head}/name", body)[0] == 200
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"erin": {"face": 4}}
    assert len(api(rig, "api/clusters")["clusters"]) == 1
    assert rig.post("api/undo")[0] == 200
    assert len(api(rig, "api/clusters")["clusters"]) == 3
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {}


def test_two_faces_of_one_frame_are_two_clusters(rig: Rig) -> None:
    (v,) = person_vectors(21, 1)
    t = time.time()
    one = keep(rig, FaceRecognized(time=t, room="kitchen", source="face", camera="cam", person="unknown", track=1), v)
    two = keep(rig, FaceRecognized(time=t, room="kitchen", source="face", camera="cam", person="unknown", track=2), v)
    three = keep(rig, FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=3), v)
    assert one != two and three in (one, two)


def test_cross_modal_proposal_names_a_voice_from_the_face_in_the_room(rig: Rig, tmp_path: Path) -> None:
    rig.publish(Presence(room="kitchen", source="presence", person="alice", state="entered", sources=["face"]))
    rig.wait(lambda: "alice" in api(rig, "api/rooms")["rooms"].get("kitchen", {}).get("people", {}), what="alice")
    voice = person_vectors(7, 3)
    for v in voice:
        cid = keep(rig, SpeakerIdentified(room="kitchen", source="speaker", person="unknown", score=0.3), v)
    # someone else's unknown voice in a room with two people is no evidence
    rig.publish(Presence(room="office", source="presence", person="bob", state="entered", sources=["face"]))
    rig.publish(Presence(room="office", source="presence", person="unknown", state="entered", unknown=1, people=2))
    rig.wait(lambda: api(rig, "api/rooms")["rooms"].get("office", {}).get("unknown") == 1, what="office unknown")
    other = keep(
        rig, SpeakerIdentified(room="office", source="speaker", person="unknown", score=0.3), person_vectors(8, 1)[0]
    )
    clusters = {x["id"]: x for x in api(rig, "api/clusters")["clusters"]}
    assert clusters[cid]["proposal"] == {"person": "alice", "alone": 3, "samples": 3}
    assert clusters[other]["proposal"] is None
    _, page = rig.get("inbox")
    assert "Accept: alice" in page.decode()
    status, body = rig.post(f"api/clusters/{cid}/name", b'{"name": "alice", "consent": "consent given"}')
    assert status == 200, body
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"alice": {"voice": 3}}


def test_cross_modal_proposal_names_a_face_from_the_voice_in_the_room(rig: Rig) -> None:
    # bob is known by voice in the hall; the camera sees one person whose face nobody knows
    rig.publish(Presence(room="hall", source="presence", person="bob", state="entered", sources=["voice"]))
    rig.publish(Presence(room="hall", source="presence", person="unknown", state="entered", unknown=1, people=1))
    rig.wait(lambda: api(rig, "api/rooms")["rooms"].get("hall", {}).get("unknown") == 1, what="hall")
    for i, v in enumerate(person_vectors(51, 2)):
        cid = keep(rig, FaceRecognized(room="hall", source="face", camera="hall-cam", person="unknown", track=i), v)
    (c,) = api(rig, "api/clusters")["clusters"]
    assert c["id"] == cid and c["proposal"] == {"person": "bob", "alone": 2, "samples": 2}


def test_remove_person_forgets_everything_kept(rig: Rig, tmp_path: Path) -> None:
    cid = keep(
        rig,
        FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=1),
        person_vectors(5, 1)[0],
    )
    assert rig.post(f"api/clusters/{cid}/name", b'{"name": "dave", "consent": "yes"}')[0] == 200
    rig.publish(FaceRecognized(room="kitchen", source="face", camera="cam", person="dave", score=0.8, track=1))
    rig.publish(Presence(room="kitchen", source="presence", person="dave", state="entered", sources=["face"]))
    rig.wait(lambda: api(rig, "api/events?person=dave")["events"], what="dave's events")
    media = list((tmp_path / "console" / "media").iterdir())
    assert media
    _, page = rig.get("person/dave")
    assert "1 face" in page.decode() and "yes" in page.decode()  # enrolled, with the consent recorded
    assert rig.post("api/people/dave/remove")[0] == 200
    assert api(rig, "api/events?person=dave")["events"] == []
    assert not list((tmp_path / "console" / "media").iterdir())
    with Gallery(tmp_path / "gallery.db") as g:
        assert "dave" not in g.people()
    assert "dave" not in api(rig, "api/rooms")["rooms"]["kitchen"]["people"]


def test_a_wrong_recognition_is_reassigned_and_undone(rig: Rig, tmp_path: Path) -> None:
    bob, alice = person_vectors(41, 2), person_vectors(42, 1)
    rig.console.identity.enroll("bob", "face", "test-face", bob)  # type: ignore[union-attr]
    # the face stage said "bob", but it was alice (whose face is not enrolled yet)
    keep(rig, FaceRecognized(room="kitchen", source="face", camera="cam", person="bob", score=0.52, track=4), alice[0])
    assert api(rig, "api/clusters")["clusters"] == []  # a recognition is not an unknown
    _, page = rig.get("person/bob")
    (sid,) = [int(x.split('"')[0]) for x in page.decode().split('data-sample="')[1:]]
    assert "0.52" in page.decode()
    status, body = rig.post(f"api/samples/{sid}/reassign", b'{"name": "alice"}')
    assert status == 200, body
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"alice": {"face": 1}, "bob": {"face": 2}}
        assert g.identify("face", "test-face", alice[0], 0.5)[0] == "alice"
    _, page = rig.get("person/alice")
    assert f'data-sample="{sid}"' in page.decode()
    assert rig.post(f"api/samples/{sid}/reassign", b'{"name": "alice"}')[0] == 400
    assert rig.post("api/undo")[0] == 200
    with Gallery(tmp_path / "gallery.db") as g:
        assert g.people() == {"bob": {"face": 2}}


def test_media_files_are_private_and_expire(rig: Rig) -> None:
    keep(
        rig,
        FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=1),
        person_vectors(6, 1)[0],
    )
    (f,) = (rig.tmp / "console" / "media").iterdir()
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert stat.S_IMODE((rig.tmp / "console" / "console.db").stat().st_mode) == 0o600
    assert rig.get(f"media/{f.name}")[0] == 200
    assert rig.get("media/..%2Fconsole.db")[0] == 404
    assert rig.store.expire_media(time.time() + 1) == 1
    assert not f.exists() and rig.get(f"media/{f.name}")[0] == 404
    assert len(rig.store.vectors(rig.store.clusters()[0].id)) == 1  # the embedding stays


def test_no_media_keeps_embeddings_only(tmp_path: Path) -> None:
    rig = Rig(tmp_path, media=False)
    try:
        keep(
            rig,
            FaceRecognized(room="kitchen", source="face", camera="cam", person="unknown", track=1),
            person_vectors(6, 1)[0],
        )
        assert not list((tmp_path / "console" / "media").iterdir())
        assert api(rig, "api/clusters")["clusters"][0]["samples"] == 1
    finally:
        rig.close()


def test_access_token_cookie_and_ingress() -> None:
    access = Access(token="s3cret-token-0123456789", ingress_from=("172.30.32.2",))

    def scope(client: str, headers: dict[str, str] | None = None, qs: str = "") -> dict:
        return {
            "type": "http",
            "client": (client, 5000),
            "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
            "query_string": qs.encode(),
        }

    assert access.allowed(scope("127.0.0.1"))
    assert not access.allowed(scope("10.0.0.5"))
    assert not access.allowed(scope("10.0.0.5", {"authorization": "Bearer wrong"}))
    assert access.allowed(scope("10.0.0.5", {"authorization": "Bearer s3cret-token-0123456789"}))
    assert access.allowed(scope("10.0.0.5", {"cookie": "a=b; sensorium_console=s3cret-token-0123456789"}))
    assert access.allowed(scope("10.0.0.5", qs="token=s3cret-token-0123456789"))
    assert access.allowed(scope("172.30.32.2", {"x-ingress-path": "/api/hassio_ingress/abc"}))
    assert not access.allowed(scope("10.0.0.5", {"x-ingress-path": "/api/hassio_ingress/abc"}))
    assert not Access(ingress_from=("172.30.32.2",)).allowed(scope("172.30.32.2"))


def test_non_loopback_needs_a_token_or_ingress() -> None:
    with pytest.raises(ValueError, match="not loopback"):
        ConsoleConfig(host="0.0.0.0")
    ConsoleConfig(host="0.0.0.0", token_file="/run/secrets/console")
    raw = {"rooms": {"k": {}}, "edges": {"e": {"room": "k"}}, "console": {"host": "0.0.0.0"}}
    with pytest.raises(ConfigError, match=r"\[console\].*token_file"):
        from_dict(raw, {})
    raw["console"] = {"retention": "7 weeks"}
    with pytest.raises(ConfigError, match=r"\[console\] retention"):
        from_dict(raw, {})


def test_token_over_the_network_and_ingress_base(tmp_path: Path) -> None:
    token = "t0ken-for-the-console-test"
    rig = Rig(tmp_path, access=Access(token=token), host="0.0.0.0")
    try:
        import socket

        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("10.255.255.255", 1))
        lan = s.getsockname()[0]
        s.close()
        if lan.startswith("127."):
            pytest.skip("no non-loopback address on this machine")
        base = f"http://{lan}:{rig.port}/"
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base, timeout=10)
        assert exc.value.code == 401
        with urllib.request.urlopen(f"{base}?token={token}", timeout=10) as r:
            assert r.status == 200 and f"sensorium_console={token}" in r.headers["set-cookie"]
        # behind ingress every URL is relative to the ingress path
        status, page = rig.get("timeline", {"X-Ingress-Path": "/api/hassio_ingress/xyz"})
        assert status == 200 and b'<base href="/api/hassio_ingress/xyz/">' in page
        assert b'href="/' not in page.replace(b'<base href="/', b"")
    finally:
        rig.close()
