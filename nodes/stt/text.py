"""The stt stage's text decisions, model-free: when a decode reads as a finished command, which partial
words are fixed, and which leading words are the wake phrase rather than the command."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

DANGLING = frozenset(
    "a an the and or but nor so to of for with at from into onto by about than as if because "
    "my your our their his her its this that these those some any every each set make".split()
)
"""Words that leave an English command open when they come last ("turn on the", "set a timer for")."""


def norm(word: str) -> str:
    """A word as compared: lower case, punctuation gone (apostrophes kept)."""
    return re.sub(r"[^\w']+", "", word.lower())


def complete_command(words: list[str], prev: list[str], fixed: list[str]) -> bool:
    """True if ``words`` (a decode of the command so far) reads as a finished command.

    Whisper ended it with sentence-final punctuation (not an ellipsis), it has at least two words,
    the last word does not leave the sentence open (``DANGLING``), the fixed partial words are its
    start, and so is the previous partial except its last (possibly cut) word.
    """
    if len(words) < 2:
        return False
    last = words[-1].strip()
    if not last.endswith((".", "?", "!")) or last.endswith("..") or norm(last) in DANGLING:
        return False
    cur = [norm(w) for w in words]
    for ref in (fixed, prev[:-1]):
        r = [norm(w) for w in ref]
        if cur[: len(r)] != r:
            return False
    return True


def stabilize(fixed: list[str], prev: list[str], cur: list[str]) -> tuple[list[str], str]:
    """Fix the words two consecutive passes agree on; return the new fixed words and the partial text.

    Fixed words never change: later passes only extend them, and the partial text is the fixed
    words followed by the current pass's words after them.
    """
    k = 0
    while k < min(len(cur), len(prev)) and norm(cur[k]) == norm(prev[k]):
        k += 1
    if k > len(fixed):
        fixed = fixed + cur[len(fixed) : k]
    return fixed, " ".join(fixed + cur[len(fixed) :])


def command_words(words: Sequence[Any], cut: float, wake_phrases: Sequence[str]) -> list[Any]:
    """The words after the wake phrase: those ending after ``cut`` (seconds into the decoded audio),
    without a leading wake phrase whisper placed later (``words`` have ``.word`` and ``.end``)."""
    i = 0
    while i < len(words) and words[i].end <= cut:
        i += 1
    rest = list(words[i:])
    for phrase in wake_phrases:
        p = [norm(x) for x in phrase.split()]
        if p and [norm(w.word) for w in rest[: len(p)]] == p:
            return rest[len(p) :]
    return rest
