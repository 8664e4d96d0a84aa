"""How long a final transcript waits for the speaker event of its utterance (the stt stage's ``speaker_wait``).

It waits only as long as speaker ID has recently taken (plus ``slack``), never longer than ``limit``,
and not at all after a final whose speaker never came (no speaker stage answering), until a speaker
event for a sent utterance arrives again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

SPEAKER_SLACK_S = 0.05
"""Added to the learnt speaker-ID latency before a final gives up waiting for its speaker."""
FORGET_S = 30.0
"""Utterances whose speaker event has not come after this long are forgotten."""


class SpeakerWait:
    """Speaker-ID latency learnt from the utterances sent and the speaker events that came back."""

    def __init__(self, limit: float, slack: float = SPEAKER_SLACK_S, now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        """The longest wait (``speaker_wait``), seconds."""
        self.slack = slack
        self.now = now
        self.sent: dict[str, float] = {}
        """When each recent Utterance was published, by utterance id."""
        self.latency: float | None = None
        """Recent speaker-ID latency (Utterance published → speaker event), seconds (moving average)."""
        self.missing = 0
        """Finals in a row whose speaker event never came."""

    def utterance_sent(self, utterance_id: str) -> float:
        """Note that the Utterance went out now; returns the time."""
        t = self.now()
        self.sent[utterance_id] = t
        return t

    def deadline(self, sent: float, covered: bool = False) -> float:
        """Until when (``now`` clock) a final whose Utterance went out at ``sent`` waits for its speaker.

        ``covered``: speaker ID embedded the speech at the last pause already, so its answer comes as soon
        as that embedding is done (usually at once): the final may wait up to the limit for it, as that
        costs nothing unless speaker ID is slow. Otherwise the learnt latency plus the slack, capped by
        the limit. No wait (``sent``) while no speaker stage answers or it is slower than the limit.
        """
        wait = self.budget()
        if wait <= 0:
            return sent
        return sent + (self.limit if covered else wait)

    def speaker_arrived(self, utterance_id: str) -> None:
        """A speaker event came (in time or late): learn its latency; speaker ID is answering again."""
        sent = self.sent.pop(utterance_id, None)
        if sent is not None:
            lat = self.now() - sent
            self.latency = lat if self.latency is None else 0.7 * self.latency + 0.3 * lat
            self.missing = 0

    def gave_up(self) -> None:
        """A final went out without its speaker."""
        self.missing += 1

    def budget(self) -> float:
        """How long after its Utterance a final may wait for the speaker event, seconds."""
        limit = self.limit
        if self.missing:
            return 0.0  # the last final's speaker never came: no speaker stage is answering
        if self.latency is not None:
            if self.latency > limit:
                return 0.0  # it would not arrive in time anyway
            limit = min(limit, self.latency + self.slack)
        now = self.now()
        for uid, t in list(self.sent.items()):  # forget utterances whose speaker never came
            if now - t > FORGET_S:
                del self.sent[uid]
        return limit
