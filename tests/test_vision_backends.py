"""Detector backends on real images: ONNX Runtime and OpenVINO find the people PyTorch finds; exports are cached.

The accuracy guard: on ultralytics' packaged bus.jpg (4 people) and zidane.jpg (2 people) every
exported backend finds the same number of people as the PyTorch model, each box matched with IoU >= 0.9.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import images
import pytest

from sensorium.models import backends
from sensorium.models.detector import PersonDetector, default_cache_dir
from sensorium.models.yolo import match_boxes


def test_auto_prefers_compiled_backends_on_the_cpu_and_gpu_providers_on_a_gpu() -> None:
    assert backends.candidates("auto", "cpu") == ["openvino", "onnxruntime", "torch"]
    # this onnxruntime build has no CUDA/TensorRT provider: on a GPU, PyTorch (CUDA) is what is left
    gpu = backends.candidates("auto", "cuda:0")
    assert gpu[-1] == "torch" and "openvino" not in gpu
    assert ("tensorrt" in gpu) == ("TensorrtExecutionProvider" in backends.ort_providers())
    assert backends.candidates("openvino", "cpu") == ["openvino", "torch"]  # a named backend still falls back
    with pytest.raises(ValueError, match="unknown detector backend 'coreml'"):
        backends.candidates("coreml", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backends_find_the_same_people_as_pytorch(backend: str) -> None:
    photos = [images.load(images.BUS), images.load(images.ZIDANE)]
    ref = PersonDetector(backend="torch").detect(photos)
    det = PersonDetector(backend=backend, cache_dir=default_cache_dir())
    assert det.backend().name == backend and not det.notes
    got = det.detect(photos)
    assert [len(r) for r in ref] == [4, 2]
    for r, g in zip(ref, got, strict=True):
        assert len(g) == len(r)
        pairs = match_boxes([b.xyxy for b in g], [b.xyxy for b in r], 0.9)
        assert len(pairs) == len(r), f"{backend}: boxes moved (IoU {[round(v, 3) for *_, v in pairs]})"


@pytest.mark.slow
def test_export_is_cached_by_weights_hash_size_and_backend(tmp_path: Path) -> None:
    det = PersonDetector(backend="onnxruntime", imgsz=320, cache_dir=tmp_path)
    first = det.backend(320).path
    assert first is not None and first.exists()
    folder = first.parent
    assert folder.parent == tmp_path and backends.weights_hash(det.weights_path) in folder.name
    assert first.name == "onnx-320.onnx"
    stamp = first.stat().st_mtime_ns
    again = PersonDetector(backend="openvino", imgsz=320, cache_dir=tmp_path)
    ov = again.backend(320)
    assert ov.path is not None and ov.path.name == "openvino-320.xml" and ov.path.parent == folder
    assert first.stat().st_mtime_ns == stamp  # OpenVINO's IR is made from the cached ONNX, not a new export
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "no temporary files left behind"


@pytest.mark.slow
def test_int8_is_used_only_when_it_finds_the_same_people(tmp_path: Path) -> None:
    det = PersonDetector(backend="onnxruntime", precision="int8", cache_dir=tmp_path)
    b = det.backend()
    photos = [images.load(images.BUS), images.load(images.ZIDANE)]
    if b.precision == "int8":
        ref = PersonDetector(backend="onnxruntime", cache_dir=tmp_path).detect(photos)
        for r, g in zip(ref, det.detect(photos), strict=True):
            assert len(match_boxes([x.xyxy for x in g], [x.xyxy for x in r], 0.9)) == len(r) == len(g)
    else:  # refused: the note says which check failed, and float32 runs
        assert b.precision == "f32" and any("INT8 not used" in n and "check photo" in n for n in det.notes), det.notes
        assert [len(r) for r in det.detect(photos)] == [4, 2]


@pytest.mark.slow
async def test_failed_export_falls_back_to_pytorch_with_a_node_status(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from sensorium.nodes.detect import DetectOptions, DetectStage
    from sensorium.pipeline.messages import Detections, Message, NodeStatus, VideoFrame
    from sensorium.pipeline.stage import StageContext

    monkeypatch.setitem(sys.modules, "onnx", None)  # the exporter's ``import onnx`` now fails, as if not installed
    out: list[Message] = []

    async def emit(msg: Message) -> None:
        out.append(msg)

    opts = DetectOptions(backend="openvino", cache_dir=str(tmp_path / "cache"))
    stage = DetectStage(StageContext(name="detect", worker="box", options=opts, data_dir=tmp_path, emit=emit))
    await stage.start()
    status = [m for m in out if isinstance(m, NodeStatus)]
    assert status and status[0].state == "degraded" and status[0].node == "box"
    assert "openvino unavailable" in status[0].detail and "ONNX export failed" in status[0].detail
    assert "running torch" in status[0].detail
    bus = images.jpeg(images.load(images.BUS))
    await stage.handle(VideoFrame(seq=1, time=1.0, room="hall", source="cam", data=bus))
    assert [len(m.boxes) for m in out if isinstance(m, Detections)] == [4]  # and it keeps detecting
    await stage.stop()


def test_exporter_never_pip_installs(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from ultralytics.utils import checks

    calls: list[object] = []

    def record(*args: object, **kwargs: object) -> bytes:
        calls.append(args)
        raise subprocess.CalledProcessError(1, "pip")

    monkeypatch.setattr(subprocess, "check_output", record)
    monkeypatch.setattr(subprocess, "run", record)
    # As on a machine with internet where ultralytics was imported before us, with auto-install on.
    monkeypatch.setattr(checks, "ONLINE", True)
    monkeypatch.setattr(checks, "AUTOINSTALL", True)
    with backends._no_autoinstall():
        assert checks.check_requirements("sensorium-no-such-package>=1") is False
    assert not calls
    assert checks.AUTOINSTALL is True  # restored after the export
    checks.check_requirements("sensorium-no-such-package>=1")  # without the guard it would have tried
    assert calls


def test_precision_env_forces_float32_where_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(backends.PRECISION_ENV, raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert backends.openvino_precision("auto") == "auto"
    monkeypatch.setenv(backends.PRECISION_ENV, "f32")
    assert backends.openvino_precision("auto") == "f32"
    assert backends.openvino_precision("int8") == "int8"  # an explicit precision is kept
    monkeypatch.delenv(backends.PRECISION_ENV)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # OpenVINO limited to AVX2 kernels: no bf16 to run
    assert backends.without_bf16() and backends.openvino_precision("auto") == "f32"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert not backends.without_bf16()
    monkeypatch.setenv(backends.PRECISION_ENV, "fp8")
    with pytest.raises(backends.BackendError, match="SENSORIUM_OPENVINO_PRECISION='fp8'"):
        backends.openvino_precision("auto")


@pytest.mark.slow
def test_openvino_int8_finds_the_same_people_is_quiet_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """``precision = "int8"`` on a CPU without bf16: NNCF's INT8 at 640 px, quantized once, quietly, and cached."""
    monkeypatch.setenv(backends.PRECISION_ENV, "f32")
    photos = [images.load(images.BUS), images.load(images.ZIDANE)]
    det = PersonDetector(backend="openvino", precision="int8", cache_dir=tmp_path)
    assert det.backend_name == "openvino 640 int8", det.notes
    assert det.notes == []
    out, err = capfd.readouterr()
    assert "nncf" not in (out + err).lower() and "Statistics collection" not in out + err, (out, err)
    ref = PersonDetector(backend="openvino", cache_dir=tmp_path).detect(photos)
    got = det.detect(photos)
    assert [len(g) for g in got] == [len(r) for r in ref] == [4, 2]
    for r, g in zip(ref, got, strict=True):
        assert len(match_boxes([x.xyxy for x in g], [x.xyxy for x in r], backends.INT8_MIN_IOU)) == len(r)
    cached = list(tmp_path.glob("*/openvino-640-int8-nncf.xml"))
    assert cached and cached[0].with_suffix(".bin").exists()
    import nncf

    def no_second_quantization(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantized again instead of loading the cached INT8 model")

    monkeypatch.setattr(nncf, "quantize", no_second_quantization)
    again = PersonDetector(backend="openvino", precision="int8", cache_dir=tmp_path)
    assert again.backend_name == "openvino 640 int8"


@pytest.mark.slow
def test_openvino_runs_float32_when_the_environment_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.PRECISION_ENV, "f32")
    det = PersonDetector(backend="openvino", cache_dir=default_cache_dir())
    assert det.backend_name == "openvino 640 f32"
    assert len(det.detect([images.load(images.ZIDANE)])[0]) == 2
