"""The one codec: round trips for every message type, and clear errors for garbage."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensorium.pipeline import codec
from sensorium.pipeline.messages import (
    ALL,
    WIRE_VERSION,
    AudioChunk,
    Box,
    Detections,
    Transcript,
    VideoFrame,
    WakeDetected,
    Word,
    old_topic,
)

text = st.text(max_size=40)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def _strategy(cls: type) -> st.SearchStrategy:
    """Messages of ``cls`` with random values for their base fields and payload."""
    base = {
        "seq": st.integers(0, 2**62),
        "time": finite,
        "room": text,
        "source": text,
    }
    if "data" in cls.__struct_fields__:
        base["data"] = st.binary(max_size=4096)
    return st.builds(cls, **base)


@pytest.mark.parametrize("cls", ALL, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_round_trip_every_type(cls: type, data: st.DataObject) -> None:
    msg = data.draw(_strategy(cls))
    frames = codec.encode(msg)
    assert frames[0] == msg.topic().encode()
    back = codec.decode(frames)
    assert back == msg
    if hasattr(msg, "data"):
        assert frames[2] == msg.data  # payload travels untouched


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(max_size=200),
    words=st.lists(
        st.builds(Word, word=st.text(max_size=10), start=finite, end=finite, probability=finite), max_size=8
    ),
    final=st.booleans(),
    speaker=st.one_of(st.none(), st.text(max_size=12)),
)
def test_transcript_round_trip_and_json(text: str, words: list[Word], final: bool, speaker: str | None) -> None:
    t = Transcript(room="kitchen", text=text, words=words, final=final, speaker=speaker)
    assert codec.decode(codec.encode(t)) == t
    public = codec.to_dict(t)
    assert public["type"] == "transcript" and public["text"] == text and public["final"] is final
    assert public["speaker"] == speaker
    assert codec.from_json(codec.to_json(t)) == t


def test_payload_is_not_reencoded_and_json_drops_media() -> None:
    jpeg = bytes(range(256)) * 100
    frame = VideoFrame(room="hall", source="cam1", width=640, height=480, data=jpeg)
    frames = codec.encode(frame)
    assert frames[2] is jpeg
    assert b"\x00\x01\x02\x03" not in frames[1]  # header does not carry the image
    assert "data" not in codec.to_dict(frame) or codec.to_dict(frame)["data"] == ""
    assert frame.data == jpeg  # encoding does not mutate the message


def test_public_event_fields() -> None:
    d = codec.to_dict(Detections(room="hall", camera="cam1", persons=1, boxes=[Box(1, 2, 3, 4, 0.9, 7)]))
    assert d["type"] == "detections" and d["camera"] == "cam1" and d["persons"] == 1
    assert d["boxes"][0] == {"x1": 1, "y1": 2, "x2": 3, "y2": 4, "score": 0.9, "track": 7}
    w = codec.to_dict(WakeDetected(room="kitchen", word="hey_jarvis", score=0.8))
    assert {"type", "seq", "time", "room", "word", "score"} <= set(w)


@settings(max_examples=300, deadline=None)
@given(frames=st.lists(st.binary(max_size=300), min_size=0, max_size=5))
def test_garbage_is_rejected_with_codec_error(frames: list[bytes]) -> None:
    try:
        msg = codec.decode(frames)
    except codec.CodecError as exc:
        assert str(exc)
    else:  # only a well-formed message may pass
        assert codec.decode(codec.encode(msg)) == msg


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 200))
def test_truncated_header_is_rejected(cut: int) -> None:
    frames = codec.encode(Transcript(room="kitchen", text="turn on the lights", final=True))
    header = frames[1]
    if cut >= len(header) - 1:
        return
    with pytest.raises(codec.CodecError):
        codec.decode([frames[0], header[: cut + 1], b""])


def test_specific_errors_say_what_was_wrong() -> None:
    good = codec.encode(AudioChunk(room="kitchen", source="pi", data=b"\0\0"))
    with pytest.raises(codec.CodecError, match="expected 3 frames"):
        codec.decode(good[:2])
    with pytest.raises(codec.CodecError, match="unknown wire version 9"):
        codec.decode([good[0], b"\x09" + good[1][1:], good[2]])
    with pytest.raises(codec.CodecError, match="payload is"):
        codec.decode([good[0], good[1], b"\0" * (codec.MAX_PAYLOAD + 1)])
    with pytest.raises(codec.CodecError, match="header is"):
        codec.decode([good[0], b"\x01" + b"\x90" * codec.MAX_HEADER, b""])
    with pytest.raises(codec.CodecError, match="malformed header"):
        codec.decode([good[0], b"\x01" + msgspec.msgpack.encode({"type": "nope"}), b""])
    with pytest.raises(codec.CodecError, match="carries no payload"):
        codec.decode([*codec.encode(WakeDetected(room="k"))[:2], b"xx"])
    with pytest.raises(codec.CodecError, match="empty header"):
        codec.decode([b"t", b"", b""])
    with pytest.raises(codec.CodecError, match="malformed event JSON"):
        codec.from_json(b'{"type": "wake", "score": "high"}')


_NON_FINITE = st.sampled_from([float("nan"), float("inf"), float("-inf")])


@pytest.mark.parametrize("cls", [c for c in ALL if codec._float_fields(c)[0]], ids=lambda c: c.__name__)
@settings(max_examples=15, deadline=None)
@given(data=st.data(), bad=_NON_FINITE)
def test_non_finite_floats_are_refused_where_made_and_from_the_wire(cls: type, data: st.DataObject, bad: float) -> None:
    field = data.draw(st.sampled_from(codec._float_fields(cls)[0]))
    msg = cls(room="kitchen", source="pi", **{field: bad})
    with pytest.raises(codec.CodecError, match=rf"{cls.__name__}\.{field} = "):
        codec.encode(msg)
    with pytest.raises(codec.CodecError, match=rf"{cls.__name__}\.{field} = "):
        codec.to_json(msg)
    # a foreign publisher that does not check: the receiver refuses it
    raw = [msg.topic().encode(), bytes([WIRE_VERSION]) + msgspec.msgpack.encode(msg), b""]
    with pytest.raises(codec.CodecError, match=rf"{cls.__name__}\.{field} = .* not a finite number"):
        codec.decode(raw)


def test_non_finite_floats_inside_words_and_boxes_are_refused() -> None:
    t = Transcript(room="kitchen", text="hi", words=[Word("hi", 0.0, 0.2), Word("there", 0.3, float("inf"))])
    with pytest.raises(codec.CodecError, match=r"Transcript\.words\[1\]\.end = inf"):
        codec.encode(t)
    d = Detections(room="hall", boxes=[Box(1, 2, 3, 4, float("nan"))])
    with pytest.raises(codec.CodecError, match=r"Detections\.boxes\[0\]\.score = nan"):
        codec.to_json(d)
    raw = [d.topic().encode(), bytes([WIRE_VERSION]) + msgspec.msgpack.encode(d), b""]
    with pytest.raises(codec.CodecError, match=r"boxes\[0\]\.score"):
        codec.decode(raw)


def test_a_topic_that_lies_about_its_message_is_refused() -> None:
    frames = codec.encode(VideoFrame(room="hall", source="cam1", data=b"\xff\xd8"))
    with pytest.raises(codec.CodecError, match="VideoFrame on a topic that does not match it: b'audio/hall/cam1'"):
        codec.decode([b"audio/hall/cam1", frames[1], frames[2]])


RENAMED = [c for c in ALL if c.old_kind]
ON_THE_WIRE = [c for c in ALL if c.kind != "ctl"]


def test_every_message_on_the_bus_has_one_name() -> None:
    """Its topic family is its public ``type``: no table translates one into the other."""
    for cls in ON_THE_WIRE:
        assert cls.kind == cls.__struct_config__.tag, cls.__name__
    assert {c.__struct_config__.tag: c.old_kind for c in RENAMED} == {
        "tts_audio": "tts",
        "budget_violation": "budget",
        "node_status": "status",
        "events_lost": "lost",
        "mcp_call": "mcp",
        "stop_playback": "stop",
        "placement_table": "assign",
    }


@pytest.mark.parametrize("cls", RENAMED, ids=lambda c: c.__name__)
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_old_topic_is_still_accepted_during_the_transition(cls: type, data: st.DataObject) -> None:
    """A peer not updated yet (an edge updated later) sends on the old topic: the same message decodes."""
    msg = data.draw(_strategy(cls))
    frames = codec.encode(msg)
    assert frames[0].split(b"/", 1)[0] == cls.__struct_config__.tag.encode()  # sent under its one name
    old = old_topic(msg).encode()
    assert old.split(b"/", 1)[0] == cls.old_kind.encode()
    if len(old) <= codec.MAX_TOPIC:
        assert codec.decode([old, frames[1], frames[2]]) == msg
    # another family's old name is still a lie
    other = next(c for c in RENAMED if c is not cls)
    with pytest.raises(codec.CodecError, match="does not match"):
        codec.decode([old.replace(cls.old_kind.encode(), other.old_kind.encode(), 1), frames[1], frames[2]])


def test_subscriptions_take_old_topics_and_drop_the_copies_for_old_peers() -> None:
    from sensorium.pipeline.bus import _old_copy, with_old_prefixes

    assert with_old_prefixes(["node_status/kitchen/", "wake/"]) == ["node_status/kitchen/", "wake/", "status/kitchen/"]
    assert with_old_prefixes(["placement_table/"]) == ["placement_table/", "assign/"]
    # tts_audio and stop_playback: every publisher of this version also sends the old copy; a subscriber takes
    # the new one only, so nothing arrives twice
    assert with_old_prefixes(["tts_audio/kitchen/", "stop_playback/"]) == ["tts_audio/kitchen/", "stop_playback/"]
    assert _old_copy([b"tts/kitchen/tts", b"", b""]) and _old_copy([b"stop/-/agent", b"", b""])
    assert not _old_copy([b"tts_audio/kitchen/tts", b"", b""]) and not _old_copy([b"status/k/pi", b"", b""])
