"""Detector backends: one set of YOLO weights run by PyTorch, ONNX Runtime, OpenVINO or TensorRT.

Every backend takes the same input — a batch of letterboxed RGB images, float32 0–1, NCHW, square
``imgsz`` — and returns the model's raw output, so pre- and post-processing (``models.detector``) are
shared and the backends find the same boxes. ``load`` picks a backend, exports the weights for it
once and caches the export, and falls back to the next candidate (finally PyTorch) with a note saying
why when a backend is missing or its export fails.

Exports are cached in ``cache_dir`` (the detect stage uses ``<data_dir>/cache/detector``, because the
weights' own folder may be read-only site-packages), one folder per weights file named by its SHA-256,
one file per backend, input size and precision: ``onnx-640.onnx``, ``onnx-320-int8.onnx``,
``openvino-640.xml`` … Each is written under a temporary name and renamed, so a crash or a second
worker exporting at the same time never leaves a half-written model behind.

Precision: ``auto`` is each backend's own choice for the hardware (OpenVINO runs bfloat16 on CPUs with
AVX-512 BF16 or AMX, float32 elsewhere; PyTorch and TensorRT float16 on a GPU), ``f32`` forces float32,
``int8`` quantizes. OpenVINO's INT8 is NNCF's post-training quantization with the head's output
convolutions and box decoding left in float (``quantize_openvino``); ONNX Runtime and TensorRT run ONNX
Runtime's static quantization (QDQ, weighted ops only), as does OpenVINO where NNCF is missing. INT8 is
calibrated on packaged photos and kept only if it finds the same people as the float model on two other
packaged photos (same count, every box matched with IoU >= ``INT8_MIN_IOU``); otherwise the float model
runs and a note says why. It is never chosen by ``auto``: with the bundled model it counts people less
well than float32 on the counting set (``benchmarks/counting.py``), most on panning clips.

``SENSORIUM_OPENVINO_PRECISION=f32`` in the environment plays a CPU without bfloat16 (AVX2 only, the
common mini-PC) on OpenVINO: ``auto`` means float32, and an INT8 model's float parts run in float32.
``bf16`` or ``auto`` (or unset) leaves OpenVINO's own choice. For that CPU's speed as well, add
``ONEDNN_MAX_CPU_ISA=AVX2`` (which alone also plays a CPU without bf16): OpenVINO's CPU plugin then uses
AVX2 kernels only (float32 at 640 px on one thread: about 330 ms instead of 200 ms here, as measured on
an AVX2-only mini-PC).
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("sensorium.models.backends")

#: Values of ``[stages.detect] backend``.
BACKENDS = ("auto", "torch", "onnxruntime", "openvino", "tensorrt")
#: Values of ``[stages.detect] precision``.
PRECISIONS = ("auto", "f32", "int8")
#: Smallest IoU between a float box and its INT8 twin for the INT8 model to be used.
INT8_MIN_IOU = 0.9
#: Environment variable that forces OpenVINO's inference precision ("f32") where the config says "auto".
PRECISION_ENV = "SENSORIUM_OPENVINO_PRECISION"
#: Bumped when the export recipe changes, so older cached exports are not reused.
EXPORT_VERSION = 1

# ultralytics' exporter pip-installs missing requirements unless told not to; a worker must never do that.
os.environ.setdefault("YOLO_AUTOINSTALL", "False")


class BackendError(RuntimeError):
    """A backend could not be loaded or its export failed."""


@dataclass
class Loaded:
    """What ``load`` chose."""

    backend: Backend
    """The backend that runs."""
    notes: list[str] = field(default_factory=list)
    """Why candidates before it (or INT8) were not used; empty when the first choice runs as asked."""


class Backend(abc.ABC):
    """Runs the detector on a batch: ``infer(batch) -> raw output`` (N, 4 + classes, anchors)."""

    name: str = ""
    imgsz: int = 640
    precision: str = "f32"
    """What it computes in: "f32", "bf16", "f16" or "int8"."""
    dynamic: bool = False
    """True if any input height/width (multiple of 32) and batch size work (PyTorch); else N×3×imgsz×imgsz."""
    path: Path | None = None
    """The exported model file (None for PyTorch)."""

    @abc.abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw output for ``batch`` (N×3×H×W, as the detector prepares it)."""

    def describe(self) -> str:
        """ "openvino 320 bf16", "torch f32" (any size) and the like."""
        size = "" if self.dynamic else f" {self.imgsz}"
        return f"{self.name}{size} {self.precision}"


# ------------------------------------------------------------------------------------------ choices


def gpu(device: str) -> bool:
    return device.startswith("cuda")


def ort_providers() -> list[str]:
    """ONNX Runtime execution providers of the installed build ([] without onnxruntime)."""
    if find_spec("onnxruntime") is None:
        return []
    import onnxruntime as ort

    return list(ort.get_available_providers())


def candidates(requested: str, device: str) -> list[str]:
    """Backends to try in order. ``auto``: TensorRT, then ONNX Runtime (CUDA) on a GPU; OpenVINO, then
    ONNX Runtime on the CPU (both clearly faster than PyTorch there); PyTorch is always the last resort."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown detector backend {requested!r} (choose one of {', '.join(BACKENDS)})")
    if requested != "auto":
        return [requested] if requested == "torch" else [requested, "torch"]
    if gpu(device):
        providers = ort_providers()
        order = []
        if "TensorrtExecutionProvider" in providers:
            order.append("tensorrt")
        if "CUDAExecutionProvider" in providers:
            order.append("onnxruntime")
        return [*order, "torch"]
    order = [b for b, mod in (("openvino", "openvino"), ("onnxruntime", "onnxruntime")) if find_spec(mod)]
    return [*order, "torch"]


# -------------------------------------------------------------------------------------------- cache


def weights_hash(path: Path) -> str:
    """SHA-256 of the weights file (first 16 hex digits): the export cache's key."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def export_dir(cache_dir: Path, weights: Path) -> Path:
    """The cache folder of one weights file: ``<cache_dir>/<stem>-<sha256[:16]>``."""
    return Path(cache_dir) / f"{weights.stem}-{weights_hash(weights)}-v{EXPORT_VERSION}"


@contextlib.contextmanager
def _no_autoinstall() -> Iterator[None]:
    """ultralytics must report a missing requirement, never pip-install it (also if imported before us)."""
    from ultralytics.utils import checks

    before = checks.AUTOINSTALL
    checks.AUTOINSTALL = False
    try:
        yield
    finally:
        checks.AUTOINSTALL = before


def _atomic_target(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.stem}-", suffix=final.suffix, dir=final.parent)
    os.close(fd)
    return Path(tmp)


def export_onnx(weights: Path, imgsz: int, cache: Path) -> Path:
    """The float ONNX export (static N=1, 3×imgsz×imgsz) via ultralytics' exporter, cached."""
    out = cache / f"onnx-{imgsz}.onnx"
    if out.exists():
        return out
    # The exporter writes next to the weights it is given: give it a private copy inside the cache.
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=cache))
    try:
        src = work / weights.name
        shutil.copyfile(weights, src)
        t0 = time.monotonic()
        with _no_autoinstall():
            from ultralytics import YOLO

            made = YOLO(str(src)).export(
                format="onnx", imgsz=imgsz, batch=1, dynamic=False, simplify=True, half=False, device="cpu"
            )
        if not made or not Path(made).exists():
            raise BackendError(f"ultralytics exported nothing for {weights.name} at {imgsz} px")
        os.replace(made, out)
        log.info("exported %s to ONNX at %d px in %.1f s → %s", weights.name, imgsz, time.monotonic() - t0, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out


def _calibration_images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration photos, check photos): people and rooms from installed packages, never the same photos."""
    import cv2

    def pkg(package: str, rel: str) -> Path | None:
        spec = find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / rel
        return p if p.exists() else None

    calib = [
        pkg("insightface", "data/images/t1.jpg"),
        pkg("skimage", "data/astronaut.png"),
        pkg("skimage", "data/motorcycle_left.png"),
        pkg("skimage", "data/coffee.png"),
        pkg("skimage", "data/chelsea.png"),
        pkg("skimage", "data/rocket.jpg"),
    ]
    check = [pkg("ultralytics", "assets/bus.jpg"), pkg("ultralytics", "assets/zidane.jpg")]

    def read(paths: list[Path | None]) -> list[np.ndarray]:
        return [img for p in paths if p is not None and (img := cv2.imread(str(p), cv2.IMREAD_COLOR)) is not None]

    return read(calib), read(check)


_WEIGHTED = {"Conv", "Gemm", "MatMul"}


def quantize_int8(fp32: Path, imgsz: int, cache: Path) -> Path:
    """Static INT8 quantization (QDQ, per-channel weights) with ONNX Runtime, calibrated on packaged photos."""
    out = cache / f"onnx-{imgsz}-int8.onnx"
    if out.exists():
        return out
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from sensorium.models.yolo import letterbox, to_tensor

    calib, _ = _calibration_images()
    if not calib:
        raise BackendError("no calibration photos installed (insightface / scikit-image data)")
    feeds = [{"images": to_tensor([letterbox(img, imgsz)[0]])} for img in calib]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    import onnx

    pre = _atomic_target(cache / f".pre-{imgsz}.onnx")
    tmp = _atomic_target(out)
    try:
        quant_pre_process(str(fp32), str(pre))
        # Only weighted ops: one INT8 scale over the head's box pixels (0–640) and class scores (0–1) would
        # round every score to 0 (ultralytics' own INT8 recipe does the same).
        graph = onnx.load(str(pre)).graph
        exclude = [n.name for n in graph.node if n.op_type not in _WEIGHTED]
        del graph
        quantize_static(
            str(pre),
            str(tmp),
            Reader(),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=exclude,
        )
        os.replace(tmp, out)
    finally:
        pre.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
    return out


def _calibration_samples(imgsz: int) -> list[np.ndarray]:
    """Letterboxed calibration inputs: each calibration photo, its mirror image and six seeded crops of it."""
    import cv2

    from sensorium.models.yolo import letterbox, to_tensor

    calib, _ = _calibration_images()
    if not calib:
        raise BackendError("no calibration photos installed (insightface / scikit-image data)")
    rng = np.random.default_rng(0)
    views: list[np.ndarray] = []
    for img in calib:
        h, w = img.shape[:2]
        views += [img, cv2.flip(img, 1)]
        for _ in range(6):
            s = rng.uniform(0.5, 0.9)
            ch, cw = int(h * s), int(w * s)
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            views.append(img[y : y + ch, x : x + cw])
    return [to_tensor([letterbox(v, imgsz)[0]]) for v in views]


@contextlib.contextmanager
def _nncf_to_debug() -> Iterator[None]:
    """NNCF writes its log (a line per layer) and progress bars to stdout itself; here its records go to our
    logging (third-party: debug) and what it prints is logged at debug level. Quantization runs while a worker
    loads, before it prints anything of its own."""
    nncf_log = logging.getLogger("nncf")
    handlers, propagate = nncf_log.handlers[:], nncf_log.propagate
    for h in handlers:
        nncf_log.removeHandler(h)
    nncf_log.propagate = True
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for h in handlers:
            nncf_log.addHandler(h)
        nncf_log.propagate = propagate
        if printed.getvalue().strip():
            log.debug("nncf printed: %s", printed.getvalue().strip())


def quantize_openvino(fp32: Path, imgsz: int, cache: Path) -> Path:
    """INT8 OpenVINO IR made by NNCF from the float IR ``fp32``: all but the head's outputs quantized.

    Left in float: the head's arithmetic (box decoding, anchors, sigmoid), as in ultralytics' own OpenVINO
    INT8 recipe, and also the last convolution of each box and class branch, because with those in INT8 the
    bundled model found a second box on a person of ``bus.jpg``; with the whole head in float INT8 gains
    half as much (640 px, one thread, float32 kernels on a 2-core Xeon: 216 ms float32, 110 ms whole head float,
    66 ms this). Takes 10-20 s
    once per input size on two cores; the result is cached.
    """
    out = cache / f"openvino-{imgsz}-int8-nncf.xml"
    if out.exists() and out.with_suffix(".bin").exists():
        return out
    import nncf
    import openvino as ov

    log.info("quantizing the person detector to INT8 at %d px with NNCF (once; cached in %s)", imgsz, cache)
    model = ov.Core().read_model(str(fp32))
    modules = {
        int(parts[1].split(".")[1])
        for op in model.get_ops()
        if len(parts := op.get_friendly_name().split("/")) > 1 and parts[1].startswith("model.")
    }
    if not modules:
        raise BackendError(f"{fp32.name}: no ultralytics module names (/model.N/…) to find the head by")
    head = f"model.{max(modules)}"
    samples = _calibration_samples(imgsz)
    with _nncf_to_debug():
        quantized = nncf.quantize(
            model,
            nncf.Dataset(samples),
            preset=nncf.QuantizationPreset.MIXED,
            ignored_scope=nncf.IgnoredScope(
                patterns=[
                    rf".*/{head}/cv[23]\.\d+/cv[23]\.\d+\.2/.*",  # the last convolution of each box / class branch
                    rf".*/{head}/dfl.*",  # the box decoding (distribution focal loss)
                    rf".*/{head}/[A-Z][^/]*$",  # the head's own arithmetic: concat, sigmoid, anchors
                ],
                validate=False,
            ),
            subset_size=len(samples),
        )
    return _save_ir(quantized, out)


def export_openvino(onnx_path: Path, cache: Path) -> Path:
    """OpenVINO IR (xml + bin) of an ONNX export, cached (read by the runtime: no converter, no telemetry)."""
    out = cache / f"openvino-{onnx_path.stem.removeprefix('onnx-')}.xml"
    if out.exists() and out.with_suffix(".bin").exists():
        return out
    import openvino as ov

    model = ov.Core().read_model(str(onnx_path))
    return _save_ir(model, out)


def _save_ir(model: Any, out: Path) -> Path:
    """Write an OpenVINO model to ``out`` (xml + bin) under temporary names, then rename: never half-written."""
    import openvino as ov

    tmp = _atomic_target(out)
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), out.with_suffix(".bin"))  # the weights first: xml present ⇒ complete
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".bin").unlink(missing_ok=True)
    return out


# ----------------------------------------------------------------------------------------- backends


class TorchBackend(Backend):
    """The ultralytics PyTorch model itself (fused; float16 on a GPU). Any input size, any batch."""

    name = "torch"
    dynamic = True

    def __init__(self, weights: Path, imgsz: int, device: str, threads: int = 0, precision: str = "auto") -> None:
        import torch
        from ultralytics import YOLO

        if threads > 0 and not gpu(device):
            torch.set_num_threads(threads)
        self.imgsz = imgsz
        self.device = torch.device(device if device != "cpu" else "cpu")
        self.half = gpu(device) and precision == "auto"
        self.precision = "f16" if self.half else "f32"
        model = YOLO(str(weights)).model
        model = model.fuse(verbose=False) if hasattr(model, "fuse") else model
        model = model.to(self.device).eval()
        self.model = model.half() if self.half else model.float()
        self._torch = torch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            out = self.model(x.half() if self.half else x)
        if isinstance(out, list | tuple):
            out = out[0]
        return out.float().cpu().numpy()


class OrtBackend(Backend):
    """ONNX Runtime: CPU, CUDA or TensorRT execution provider."""

    def __init__(self, path: Path, imgsz: int, precision: str, device: str, threads: int, provider: str) -> None:
        import onnxruntime as ort

        self.path, self.imgsz = path, imgsz
        int8 = precision == "int8"
        self.precision = "int8" if int8 else "f32"
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # Spinning threads burn a shared 2-core box's CPU between frames for a few ms of latency.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        index = int(device.split(":")[1]) if ":" in device else 0
        providers: list[Any]
        if provider == "tensorrt":
            engines = path.parent / "tensorrt"
            engines.mkdir(exist_ok=True)
            trt = {
                "device_id": index,
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(engines),
                "trt_fp16_enable": precision == "auto",
                "trt_int8_enable": int8,
            }
            providers = [("TensorrtExecutionProvider", trt), ("CUDAExecutionProvider", {"device_id": index})]
            self.name = "tensorrt"
            self.precision = "int8" if int8 else "f16" if precision == "auto" else "f32"
        elif provider == "cuda":
            providers = [("CUDAExecutionProvider", {"device_id": index})]
            self.name = "onnxruntime-cuda"
        else:
            providers = []
            self.name = "onnxruntime"
        providers.append("CPUExecutionProvider")
        self.session = ort.InferenceSession(str(path), so, providers=providers)
        used = self.session.get_providers()
        if provider in ("tensorrt", "cuda") and used[0] == "CPUExecutionProvider":
            raise BackendError(f"ONNX Runtime could not start its {provider} provider (runs on {used})")
        self.input = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # Static N=1 export: one run per image (on a CPU a batch gains nothing anyway).
        outs = [self.session.run(None, {self.input: batch[i : i + 1]})[0] for i in range(len(batch))]
        return np.concatenate(outs, axis=0)


def without_bf16() -> bool:
    """Whether the environment plays a CPU without bfloat16: ``SENSORIUM_OPENVINO_PRECISION=f32``, or a oneDNN
    instruction-set limit without bf16 (``ONEDNN_MAX_CPU_ISA=AVX2``, which OpenVINO's CPU plugin obeys: it
    still reports bf16 there, but cannot run it)."""
    forced = os.environ.get(PRECISION_ENV, "").strip().lower()
    if forced not in ("", "auto", "bf16", "f32"):
        raise BackendError(f"{PRECISION_ENV}={forced!r}: expected f32, bf16 or auto")
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return forced == "f32" or (isa not in ("", "ALL", "DEFAULT") and "BF16" not in isa and "AMX" not in isa)


def openvino_precision(precision: str) -> str:
    """The precision OpenVINO is asked for: ``precision``, or "f32" where it is "auto" and the environment
    plays a CPU without bfloat16 (``without_bf16``)."""
    return "f32" if precision == "auto" and without_bf16() else precision


class OpenVinoBackend(Backend):
    """OpenVINO on the CPU: one image on one thread, several as parallel streams (one per core).

    One thread per image costs about a quarter less CPU than splitting an image over the cores, and on
    a small box the other stages need those cores at the same time anyway; a batch (the crops and
    frames of several cameras) keeps every core busy through a throughput-compiled model. ``threads``
    > 0 gives single images that many threads instead.
    """

    name = "openvino"

    def __init__(self, path: Path, imgsz: int, precision: str, threads: int) -> None:
        import openvino as ov

        self.path, self.imgsz = path, imgsz
        self._ov = ov
        self.core = ov.Core()
        self.config: dict[str, Any] = {"CACHE_DIR": str(path.parent / "openvino-cache")}
        precision = openvino_precision(precision)
        # An INT8 model's float parts (the head's outputs) run in bf16 on a bf16 CPU, unless the environment plays one
        # without.
        if precision == "f32" or (precision == "int8" and without_bf16()):
            self.config["INFERENCE_PRECISION_HINT"] = "f32"
        single = {**self.config, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": max(1, threads)}
        self.compiled = self.core.compile_model(str(path), "CPU", single)
        self.request = self.compiled.create_infer_request()
        self._queue: Any = None
        hint = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        self.precision = "int8" if precision == "int8" else "bf16" if "bf16" in hint or "bfloat16" in hint else "f32"

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if len(batch) == 1:
            self.request.infer({0: batch})
            return self.request.get_output_tensor(0).data.copy()
        if self._queue is None:
            streams = self.core.compile_model(str(self.path), "CPU", {**self.config, "PERFORMANCE_HINT": "THROUGHPUT"})
            jobs = int(streams.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            self._queue = self._ov.AsyncInferQueue(streams, jobs)
            self._queue.set_callback(lambda req, slot: slot.append(req.get_output_tensor(0).data.copy()))
        slots: list[list[np.ndarray]] = [[] for _ in range(len(batch))]
        for i in range(len(batch)):
            self._queue.start_async({0: batch[i : i + 1]}, slots[i])
        self._queue.wait_all()
        return np.concatenate([s[0] for s in slots], axis=0)


# ------------------------------------------------------------------------------------------- loading


def _build(name: str, weights: Path, imgsz: int, device: str, cache: Path, precision: str, threads: int) -> Backend:
    if name == "torch":
        return TorchBackend(weights, imgsz, device, threads, precision)
    if name == "openvino" and gpu(device):
        raise BackendError("OpenVINO runs on Intel CPUs/GPUs here, not on CUDA devices")
    if name in ("onnxruntime", "tensorrt") and find_spec("onnxruntime") is None:
        raise BackendError("onnxruntime is not installed")
    if name == "openvino" and find_spec("openvino") is None:
        raise BackendError("openvino is not installed")
    if name == "tensorrt" and "TensorrtExecutionProvider" not in ort_providers():
        raise BackendError("this onnxruntime build has no TensorRT execution provider")
    if name == "onnxruntime" and gpu(device) and "CUDAExecutionProvider" not in ort_providers():
        raise BackendError("this onnxruntime build has no CUDA execution provider (onnxruntime-gpu)")
    try:
        path = export_onnx(weights, imgsz, cache)
    except Exception as exc:
        raise BackendError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    if precision == "int8" and name == "openvino" and find_spec("nncf") is not None:
        return OpenVinoBackend(quantize_openvino(export_openvino(path, cache), imgsz, cache), imgsz, precision, threads)
    if precision == "int8":  # TensorRT runs the quantized (QDQ) graph in INT8 as well
        path = quantize_int8(path, imgsz, cache)
    if name == "openvino":
        return OpenVinoBackend(export_openvino(path, cache), imgsz, precision, threads)
    provider = "tensorrt" if name == "tensorrt" else "cuda" if gpu(device) else "cpu"
    return OrtBackend(path, imgsz, precision, device, threads, provider)


def load(
    requested: str,
    weights: Path,
    imgsz: int,
    device: str = "cpu",
    cache_dir: Path | None = None,
    precision: str = "auto",
    threads: int = 0,
    check: Any = None,
) -> Loaded:
    """The first backend of ``candidates(requested, device)`` that loads, with notes on those that did not.

    ``check(fp32_backend, int8_backend) -> str | None`` is the INT8 accuracy check (None = passed); an
    INT8 model that fails it, or cannot be made, is replaced by the float one of the same backend.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r} (choose one of {', '.join(PRECISIONS)})")
    cache = export_dir(cache_dir or weights.parent / "exports", weights)
    notes: list[str] = []
    for name in candidates(requested, device):
        try:
            backend = _build(name, weights, imgsz, device, cache, "auto" if precision == "int8" else precision, threads)
        except Exception as exc:
            log.warning("detector backend %s at %d px unavailable: %s", name, imgsz, exc)
            notes.append(f"{name} unavailable ({exc})")
            continue
        int8 = precision == "int8"
        if int8 and name != "torch":
            try:
                quantized = _build(name, weights, imgsz, device, cache, "int8", threads)
                why = check(backend, quantized) if check is not None else None
            except Exception as exc:
                why = f"INT8 quantization failed: {type(exc).__name__}: {exc}"
            if why:
                notes.append(f"{name} INT8 not used at {imgsz} px: {why}; running float32")
            else:
                backend = quantized
        elif int8:
            notes.append("torch has no INT8 path here; running float32")
        return Loaded(backend, notes)
    raise BackendError("no detector backend could be loaded: " + "; ".join(notes))
