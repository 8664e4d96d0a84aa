"""The stt stage's model-free parts on their own: the endpoint rule, finished-command decisions, fixed partial words,
wake-phrase stripping, and how long a final waits for its speaker."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sensorium.nodes.stt.endpoint import GO_ON, MIN_SPEECH_S, SPEC_PAUSE_S, Durations, Heard, Step, early_end, endpoint
from sensorium.nodes.stt.speaker_wait import FORGET_S, SpeakerWait
from sensorium.nodes.stt.text import command_words, complete_command, stabilize


@dataclass
class W:
    word: str
    end: float


def test_a_command_is_complete_when_it_ends_a_sentence_that_is_not_left_open() -> None:
    assert complete_command(["Turn", "on", "the", "lights."], ["Turn", "on", "the", "li"], ["Turn", "on"])
    assert not complete_command(["Turn", "on", "the."], [], [])  # "the" leaves it open
    assert not complete_command(["Set", "a", "timer", "for..."], [], [])  # an ellipsis is not an end
    assert not complete_command(["Lights."], [], [])  # one word is not enough
    assert not complete_command(["Turn", "off", "the", "lights."], [], ["Turn", "on"])  # fixed words changed


def test_stabilize_fixes_what_two_passes_agree_on_and_never_changes_it() -> None:
    fixed, text = stabilize([], ["turn", "on", "the"], ["turn", "on", "a", "light"])
    assert fixed == ["turn", "on"] and text == "turn on a light"
    fixed, text = stabilize(fixed, ["turn", "on", "a", "light"], ["Turn", "off", "the", "lights"])
    assert fixed == ["turn", "on"] and text == "turn on the lights"  # "Turn off" cannot undo fixed words


def test_the_wake_phrase_is_cut_by_time_and_by_text() -> None:
    words = [W("Jarvis,", 0.9), W("this", 1.1), W("turn", 1.5), W("on", 1.6), W("lights.", 2.0)]
    assert [w.word for w in command_words(words, 1.2, ["hey jarvis"])] == ["turn", "on", "lights."]
    late = [W("Hey", 1.3), W("Jarvis,", 1.5), W("what", 1.8), W("time", 2.0)]  # whisper placed it after the cut
    assert [w.word for w in command_words(late, 1.2, ["alexa", "hey jarvis"])] == ["what", "time"]
    assert [w.word for w in command_words(late, 0.0, [])] == ["Hey", "Jarvis,", "what", "time"]


def test_a_final_waits_as_long_as_speaker_id_takes_and_not_at_all_when_nobody_answers() -> None:
    t = [100.0]
    wait = SpeakerWait(limit=0.3, now=lambda: t[0])
    assert wait.budget() == 0.3  # nothing learnt yet: the limit
    wait.utterance_sent("u1")
    t[0] += 0.1
    wait.speaker_arrived("u1")
    assert wait.latency is not None and abs(wait.latency - 0.1) < 1e-9
    assert abs(wait.budget() - 0.15) < 1e-9  # the learnt latency plus the slack
    wait.utterance_sent("u2")
    wait.gave_up()  # its speaker never came: the next final does not wait
    assert wait.budget() == 0.0
    t[0] += 1.0
    wait.speaker_arrived("u2")  # a late one still counts: speaker ID is back
    assert wait.missing == 0 and wait.budget() == 0.0  # but now slower than the limit: no use waiting
    wait.utterance_sent("u3")
    t[0] += FORGET_S + 1
    wait.latency = 0.1
    wait.budget()
    assert "u3" not in wait.sent  # forgotten


def test_a_final_covered_by_a_partial_waits_up_to_the_limit_for_its_speaker() -> None:
    """Speaker ID embedded the speech at the pause: its answer comes when that embedding is done, so the
    final may wait up to the limit (the learnt latency, small when it was done, would cut it off)."""
    t = [100.0]
    wait = SpeakerWait(limit=0.3, now=lambda: t[0])
    sent = wait.utterance_sent("u1")
    t[0] += 0.005
    wait.speaker_arrived("u1")  # at once: the partial's embedding was ready
    sent = wait.utterance_sent("u2")
    assert abs(wait.deadline(sent) - (sent + 0.055)) < 1e-9  # not covered: the learnt latency + slack
    assert abs(wait.deadline(sent, covered=True) - (sent + 0.3)) < 1e-9
    wait.gave_up()
    assert wait.deadline(sent, covered=True) == sent  # nobody answers: no wait


# ------------------------------------------------------------------------------------------ endpointing

D = Durations(
    preroll=2.0,
    trailing_silence=0.7,
    early_endpoint=0.3,
    decode_margin=1.0,
    encoder_window=10.0,
    max_length=12.0,
    no_speech_timeout=3.0,
    partial_interval=0.6,
    speaker_wait=0.3,
    stream_timeout=1.0,
)


def test_the_durations_are_read_from_the_stage_options_once_and_a_bad_one_is_named() -> None:
    from sensorium.nodes.stt import SttStage

    d = Durations.of(SttStage.Options(trailing_silence="500ms", max_length="8s"))
    assert d.trailing_silence == 0.5 and d.max_length == 8.0 and d.preroll == 2.0
    with pytest.raises(ValueError, match="no_speech_timeout"):
        Durations.of(SttStage.Options(no_speech_timeout="soon"))


def test_trailing_silence_after_speech_ends_the_command() -> None:
    assert endpoint(D, Heard(speech_s=1.2, silence_s=0.69, since_wake=2.0), -1.0, False) == Step(speculate=True)
    assert endpoint(D, Heard(speech_s=1.2, silence_s=0.7, since_wake=2.0), -1.0, False).close == "endpoint"
    # a cough (less speech than MIN_SPEECH_S) followed by silence is not a command
    assert endpoint(D, Heard(speech_s=0.1, silence_s=2.0, since_wake=2.2), -1.0, False) == GO_ON


def test_a_complete_command_ends_early_only_if_no_speech_came_after_its_pause_decode() -> None:
    heard = Heard(speech_s=1.2, silence_s=0.35, since_wake=2.0)
    assert endpoint(D, heard, 1.2, True).close == "early-endpoint"
    assert endpoint(D, heard, 1.2, False) == GO_ON  # the pause decode read an open ending: wait
    assert endpoint(D, heard, 0.9, True) == Step(speculate=True)  # speech since: decode this pause again
    off = replace(D, early_endpoint=0.0)
    assert endpoint(off, heard, 1.2, True) == GO_ON
    assert not early_end(off, True, 5.0) and early_end(D, True, 0.3) and not early_end(D, False, 0.3)


def test_max_length_and_no_speech_timeout_end_the_utterance() -> None:
    assert endpoint(D, Heard(speech_s=11.0, silence_s=0.0, since_wake=12.0), -1.0, False).close == "max-length"
    assert endpoint(D, Heard(speech_s=0.0, silence_s=3.0, since_wake=3.0), -1.0, False).close == "no-speech"
    assert endpoint(D, Heard(speech_s=0.0, silence_s=2.9, since_wake=2.9), -1.0, False) == GO_ON


def test_the_pause_decode_starts_before_either_endpoint_can_fire() -> None:
    assert D.spec_pause == SPEC_PAUSE_S
    assert replace(D, early_endpoint=0.1).spec_pause == 0.1
    assert replace(D, trailing_silence=0.3).spec_pause == 0.15
    assert replace(D, early_endpoint=0.0).spec_pause == SPEC_PAUSE_S


_s = st.floats(min_value=0.0, max_value=20.0, allow_nan=False)


@given(
    speech=_s,
    silence=_s,
    since=_s,
    spec=st.one_of(st.just(-1.0), _s),
    complete=st.booleans(),
    trailing=st.floats(min_value=0.05, max_value=3.0),
    early=st.floats(min_value=0.0, max_value=3.0),
)
def test_the_endpoint_rule_holds_for_any_state(
    speech: float, silence: float, since: float, spec: float, complete: bool, trailing: float, early: float
) -> None:
    d = replace(D, trailing_silence=trailing, early_endpoint=early)
    step = endpoint(d, Heard(speech, silence, since), spec, complete)
    assert not (step.close and step.speculate)
    spoke = speech >= MIN_SPEECH_S
    if step.close in ("endpoint", "early-endpoint"):
        assert spoke  # silence alone never makes a command
    if step.close == "early-endpoint":
        assert complete and spec == speech and 0 < early <= silence
    if step.close is None:
        assert since < d.max_length  # nothing outlives max_length
        assert spoke or since < d.no_speech_timeout
        assert not (spoke and silence >= trailing)
    if step.speculate:
        assert spoke and silence >= d.spec_pause and spec != speech
    # the pause decode is due before the trailing silence is reached, so a final can reuse it
    assert d.spec_pause <= trailing
