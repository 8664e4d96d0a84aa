"""Speaker identification: embed each utterance and match it against the gallery.

Speaker ID keeps up with the utterance while it streams: the stt stage sends the audio so far at each
pause in the speech (a partial ``Utterance``) and the stage embeds it then, while whisper decodes. When
that pause becomes the endpoint (the endpoint's ``Utterance`` is ``covered`` by it: no speech came
after), the answer is that embedding's, published at once; otherwise the whole utterance is embedded.

The answer is an enrolled name only when the cosine similarity to that person's voice print
reaches the threshold; otherwise it is "unknown", never the nearest enrolled person. Default
thresholds per backend were calibrated on synthesized voices (see tests/test_voice_speaker.py):
Resemblyzer same-speaker scores on new sentences were 0.82–0.92 and different speakers at most
0.74, so 0.78 sits between them.

Own voice. A room's microphone hears sensorium's own answers; their voice is a TTS voice, and when a
person's enrolled voice resembles it (or, in tests, is it) speaker ID would name that person for what
the loudspeaker said. With ``own_voices`` (the TTS voices the deployment speaks in: the ``[stages.tts]``
backend specs) the stage builds a reserved voice print of its own at start, synthesized with those
voices; an utterance at least ``threshold`` close to it and at least as close to it as to any enrolled
person is the house's own voice: "unknown", never a person (counted in ``own_voice``).
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from sensorium.models.gallery import UNKNOWN
from sensorium.pipeline.messages import Message, SpeakerIdentified, Utterance
from sensorium.pipeline.stage import Library, Stage, StageOptions

RATE = 16000
MIN_AUDIO_S = 0.5
OWN_VOICE_TEXTS = (
    "The kitchen lights are on and the front door is locked.",
    "Tomorrow will be cloudy with a high of fourteen degrees.",
    "I set a timer for ten minutes, just ask if you want to change it.",
    "Your parcel arrives on Thursday between ten and two.",
)
"""What the own-voice print is synthesized from (answers of the kind sensorium speaks)."""
MAX_HEARD = 64
"""Open utterances whose speech-so-far embedding is kept (the oldest forgotten first)."""
DEFAULT_THRESHOLDS = {"resemblyzer": 0.78, "ecapa": 0.30}
"""Cosine thresholds per backend (ECAPA's is the usual VoxCeleb operating point)."""


def default_threshold(model: str) -> float:
    """The calibrated threshold for a speaker-model spec (``resemblyzer``, ``ecapa:<dir>`` …)."""
    return DEFAULT_THRESHOLDS.get(model.partition(":")[0], 0.78)


class SpeakerStage(Stage):
    """Who spoke each utterance, from the voice gallery."""

    class Options(StageOptions):
        """``[stages.speaker]``."""

        model: str = "resemblyzer"
        """Embedding backend: "resemblyzer" (bundled GE2E), "ecapa" (hub id) or "ecapa:<dir or hub id>"."""
        threshold: float | None = None
        """Cosine similarity needed to name a person (None = the backend's calibrated default)."""
        gallery: str = ""
        """Gallery file ("" = <data_dir>/gallery.db)."""
        cache_dir: str = ".cache/models"
        """Where downloaded speechbrain models are kept."""
        own_voices: list[str] = []
        """TTS voices sensorium answers in ([stages.tts] backend specs: "piper", "flite:slt" …): speech in them
        is the house's own voice, never a person's. Empty = no own-voice print (a person enrolled with the very
        voice the TTS speaks in could not be named at all with it)."""

    name: ClassVar[str] = "speaker"
    serves: ClassVar[str] = "room"
    consumes: ClassVar[tuple[type[Message], ...]] = (Utterance,)
    emits: ClassVar[tuple[type[Message], ...]] = (SpeakerIdentified,)
    answers: ClassVar[tuple[type[Message], ...]] = (SpeakerIdentified,)
    libraries: ClassVar[tuple[Library, ...]] = (
        Library("resemblyzer", "Resemblyzer (sensorium[workers]; install it from uv.lock: deploy/install-worker.sh)"),
    )
    droppable: ClassVar[bool] = False
    default_budget_ms: ClassVar[float] = 500.0

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self._heard: OrderedDict[str, tuple[int, np.ndarray]] = OrderedDict()
        """Utterance id → (samples, embedding) of its latest partial ``Utterance`` (speech heard so far)."""
        self.from_partial = 0
        """Endpoints answered from the embedding of a partial (no embedding left to compute)."""
        self.own_print: np.ndarray | None = None
        """Unit voice print of the TTS voices in ``own_voices`` (None without them)."""
        self.own_voice = 0
        """Utterances answered "unknown" because they are in the house's own (TTS) voice."""

    async def start(self) -> None:
        from sensorium.models.gallery import Gallery
        from sensorium.models.speaker import load_encoder

        o = self.ctx.options
        self.threshold = o.threshold if o.threshold is not None else default_threshold(o.model)
        path = Path(o.gallery) if o.gallery else Path(self.ctx.data_dir) / "gallery.db"
        self.gallery = Gallery(path)
        self.gallery.check()
        device = self.ctx.device
        self.encoder: Any = await self.ctx.run_blocking(lambda: load_encoder(o.model, device, o.cache_dir))
        # The first embedding imports and compiles seconds of library code under the interpreter lock:
        # at load, not on the first utterance, where it held up every stage of the worker.
        await self.ctx.run_blocking(self.encoder.warm_up)
        if o.own_voices:
            self.own_print = await self.ctx.run_blocking(self._own_print, list(o.own_voices))
        n = self.gallery.count("voice", self.encoder.model_id)
        if n == 0:
            model = "" if o.model == "resemblyzer" else f" --speaker-model {o.model}"
            self.ctx.log.warning(
                "speaker: no voices enrolled for %s in %s; everyone is unknown "
                "(enrol: sensorium enroll NAME --voice FILE.wav --gallery %s%s, or --config with this deployment)",
                self.encoder.model_id,
                path,
                path.resolve(),
                model,
            )

    def _own_print(self, voices: list[str]) -> np.ndarray:
        """The mean direction of ``OWN_VOICE_TEXTS`` spoken by each voice (blocking: synthesis and embedding)."""
        from sensorium.models.tts import TtsError, load_backend
        from sensorium.pipeline.media import resample

        embs = []
        for spec in voices:
            try:
                tts = load_backend(spec)
                tts.load()
                for text in OWN_VOICE_TEXTS:
                    pcm, rate = tts.synthesize(text)
                    embs.append(self.encoder.embed(resample(pcm, rate, RATE), RATE))
            except (TtsError, OSError) as exc:
                raise ValueError(f"[stages.speaker] own_voices: {spec!r} cannot speak here: {exc}") from exc
        mean = np.mean(embs, axis=0)
        return mean / np.linalg.norm(mean)

    def identify(self, emb: np.ndarray) -> tuple[str, float]:
        """``(person, score)`` for an utterance's embedding: "unknown" for the house's own voice."""
        person, score = self.gallery.identify("voice", self.encoder.model_id, emb, self.threshold)
        if self.own_print is not None:
            own = float(np.dot(self.own_print, emb) / (np.linalg.norm(emb) + 1e-9))
            if own >= self.threshold and own >= score:
                self.own_voice += 1
                self.ctx.log.info("speaker: own (TTS) voice %.2f ≥ %s %.2f: not a person", own, person, score)
                return UNKNOWN, score
        return person, score

    async def handle(self, msg: Message) -> None:
        if not isinstance(msg, Utterance):
            await self.ctx.reject(msg, f"speaker consumes utterances, got {type(msg).__name__}")
            return
        if problem := self.ctx.room_problem(msg.room):
            await self.ctx.reject(msg, problem)
            return
        if msg.rate != RATE:
            await self.ctx.reject(msg, f"sample rate {msg.rate} Hz, expected {RATE} Hz")
            return
        if len(msg.data) % 2:
            await self.ctx.reject(msg, f"{len(msg.data)} bytes is not a whole number of 16-bit samples")
            return
        n = len(msg.data) // 2
        if msg.partial:
            if n >= MIN_AUDIO_S * RATE:  # a short one is no error: the endpoint's Utterance follows
                with contextlib.suppress(ValueError):
                    emb = await self.ctx.run_blocking(self.encoder.embed, msg.pcm().astype(np.int16), RATE)
                    self._heard[msg.utterance_id] = (n, emb)
                    while len(self._heard) > MAX_HEARD:
                        self._heard.popitem(last=False)
            return
        heard = self._heard.pop(msg.utterance_id, None)
        if heard is not None and msg.covered and heard[0] == msg.covered:
            emb = heard[1]  # no speech after the pause that partial ended at: its embedding is the answer
            self.from_partial += 1
        else:
            if n < MIN_AUDIO_S * RATE:
                await self.ctx.reject(msg, f"utterance too short for speaker ID ({n / RATE:.2f} s)")
                return
            try:
                emb = await self.ctx.run_blocking(self.encoder.embed, msg.pcm().astype(np.int16), RATE)
            except ValueError as exc:  # e.g. no speech left after trimming
                await self.ctx.reject(msg, str(exc))
                return
        person, score = self.identify(emb)
        await self.ctx.publish(
            SpeakerIdentified(
                time=msg.t1 or msg.time, room=msg.room, utterance_id=msg.utterance_id, person=person, score=score
            )
        )

    async def stop(self) -> None:
        self.gallery.close()
