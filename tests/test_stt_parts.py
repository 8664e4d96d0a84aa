"""The stt stage's model-free parts on their own: finished-command decisions, fixed partial words,
wake-phrase stripping, and how long a final waits for its speaker."""

from __future__ import annotations

from dataclasses import dataclass

from nodes.stt.speaker_wait import FORGET_S, SpeakerWait
from nodes.stt.text import command_words, complete_command, stabilize


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
