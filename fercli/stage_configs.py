"""The config dataclasses of the one-module stages, light: commands build and validate them first.

`fer eval` (:class:`EvalConfig`), `fer gen-labels` (:class:`GenLabelsConfig`), `fer calibrate`
(:class:`CalibrateConfig`), `fer bench` (:class:`BenchConfig`), `fer export` (:class:`ExportConfig`) and
`fer predict` (:class:`PredictConfig`) each run in one module that imports torch, OpenCV or pandas
(:mod:`fercli.evaluation`, :mod:`fercli.gen_labels`, :mod:`fercli.calibration`, :mod:`fercli.bench`,
:mod:`fercli.export_core`, :mod:`fercli.predict`); `fer data import`'s :class:`ImportConfig` belongs to
:mod:`fercli.importers`, whose modules import pandas. Their configs live here instead, so that
:func:`fercli.config.build_config` refuses a bad option in a fraction of a second; each stage module
re-exports its config (``from fercli.evaluation import EvalConfig`` keeps working). Stages that are
packages keep theirs in their own light ``config.py`` (:mod:`fercli.align.config`,
:mod:`fercli.training.config`, :mod:`fercli.serve.config`).

This module imports no third-party package, and from fercli only light modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fercli.align.config import (DEFAULT_DETECT_SIZE, DEFAULT_DETECTOR, DEFAULT_MARGIN, DEFAULT_MIN_FACE_SIZE,
                                 DEFAULT_MIN_SCORE, DEFAULT_SIZE)
from fercli.choices import VIDEO_EXTS, LoaderOptions
from fercli.errors import FerError
from fercli.schema import SPLITS


# ---- fer eval ----------------------------------------------------------------------------------------
@dataclass
class EvalConfig:
    """Options of `fer eval`."""

    model: Path | None = None  # checkpoint or export; default: the workspace's student
    manifest: Path | None = None  # default: the workspace's dataset
    split: str = "test"
    tta: str | None = None  # none or flip; default: the model's recommendation (Classifier.tta)
    map: bool = False  # score on the shared classes when one class list is a subset of the other
    out: Path | None = None  # report directory; default: the workspace's eval/
    batch_size: int = 128
    workers: int = 2
    cache: bool = True
    device: str = "auto"
    threads: int | None = None
    runtime: str = "onnxruntime"  # an .onnx model: onnxruntime or openvino (fercli.export.RUNTIMES)
    robustness: bool = False  # also score under the corruption suite (fercli.robustness)
    corruptions: tuple[str, ...] = ()  # with robustness: these corruptions only; empty: the whole suite
    robustness_seed: int = 0  # seeds the corruptions (noise); part of the corrupted images' cache key


# ---- fer gen-labels ----------------------------------------------------------------------------------
@dataclass
class GenLabelsConfig(LoaderOptions):
    """Options of `fer gen-labels`."""

    teacher: Path | None = None
    ensemble: tuple[Path, ...] = ()  # more teachers: the distribution is the mean of all teachers' softmax
    manifest: Path | None = None
    out: Path | None = None  # default: the workspace's labels/labels.parquet
    temperature: float = 1.0
    flip: bool = False  # average the softmax of the image and its mirror
    splits: tuple[str, ...] = ("train",)
    force: bool = False  # allow labelling the test split


# ---- fer calibrate -----------------------------------------------------------------------------------
@dataclass
class CalibrateConfig(LoaderOptions):
    """Options of `fer calibrate` (the ``[calibrate]`` table of a config file)."""

    model: Path | None = None  # a fercli checkpoint; default: the workspace's student
    manifest: Path | None = None  # default: the workspace's dataset
    split: str = "valid"  # fit on held-out images, never on the test split you report
    out: Path | None = None  # default: rewrite the checkpoint in place


# ---- fer bench ---------------------------------------------------------------------------------------
QUANTIZED_BACKENDS = {"onnxruntime-fp16": "fp16", "onnxruntime-int8-dynamic": "int8-dynamic", "onnxruntime-int8": "int8"}
DEFAULT_BACKENDS = ("eager", "torchscript", "onnxruntime")
BACKENDS = (*DEFAULT_BACKENDS, *QUANTIZED_BACKENDS, "openvino")
FILE_BACKENDS = ("onnxruntime", "openvino")  # what an exported .onnx file listed as a model runs on


@dataclass
class BenchConfig:
    """Options of `fer bench` (the ``[bench]`` table of a config file)."""

    models: tuple[str, ...] = ("shufflenet_v2", "lfer_head", "lfer")  # registry names or checkpoint paths
    sizes: tuple[int, ...] = ()  # empty: DEFAULT_INPUT_SIZE (the paper's 224) for registry names, a checkpoint's own size
    batches: tuple[int, ...] = (1, 32)
    backends: tuple[str, ...] = DEFAULT_BACKENDS  # BACKENDS lists every choice
    devices: tuple[str, ...] = ()  # empty: cpu, plus cuda when available
    num_classes: int = 7  # for registry names
    warmup: int = 3
    reps: int = 100  # timed passes per (model, backend) and cell, at most
    min_reps: int = 5  # ... at least, even past the time budget
    max_seconds: float = 2.0  # time budget per (model, backend) and cell
    threads: int = 0  # intra-op threads for torch and onnxruntime; 0: torch's current setting
    latency: bool = True  # False: parameters and MACs only


# ---- fer export --------------------------------------------------------------------------------------
@dataclass
class ExportConfig:
    """Options of `fer export` (the ``[export]`` table of a config file)."""

    format: Literal["onnx", "torchscript", "checkpoint"] = "onnx"
    out: Path | None = None  # default: WORKSPACE/export/model.onnx (or .torchscript, .pt)
    opset: int = 17
    half: bool = False  # checkpoint format: store float16 weights
    tolerance: float | None = None  # max abs logit difference vs eager PyTorch; default 1e-4 (5e-2 with half)
    parity_batches: tuple[int, ...] = (1, 3)  # batch sizes of the random parity inputs (tests dynamic batch)
    seed: int = 0  # also seeds the calibration sample of --quantize
    # --quantize (fercli.quantize): an int8 (static, QDQ), int8-dynamic or fp16 ONNX file
    quantize: str | None = None  # int8, int8-dynamic or fp16 (fercli.quantize.MODES)
    calib: Path | None = None  # manifest (its train split is sampled) or .npy uint8 images; default: the workspace's dataset
    calib_size: int = 500  # calibration images (at least 50)
    quant_exclude: tuple[str, ...] = ()  # nodes kept in float32: first-conv, head, depthwise or node names
    min_agreement: float | None = None  # top-1 agreement with float32 below which nothing is written


# ---- fer predict -------------------------------------------------------------------------------------
@dataclass
class PredictConfig:
    """Options of `fer predict`; the detection options mean what they mean for `fer align`."""

    inputs: tuple[str, ...] = ()
    model: Path | None = None  # default: the workspace's student
    detector: str = DEFAULT_DETECTOR  # auto: a cached RetinaFace, else OpenCV's Haar cascade (never downloads)
    detector_weights: Path | None = None
    faces: str = "all"  # all, largest or best
    min_score: float = DEFAULT_MIN_SCORE
    min_face_size: float = DEFAULT_MIN_FACE_SIZE
    size: int = DEFAULT_SIZE  # alignment output size, as `fer align --size`
    margin: float = DEFAULT_MARGIN
    detect_size: int = DEFAULT_DETECT_SIZE
    no_detect: bool = False  # each image is already an aligned face
    every: int = 30  # videos among several inputs (or with --every): classify every N-th frame as a picture
    tta: str | None = None  # none or flip; default: the model's recommendation (Classifier.tta)
    batch_size: int = 8  # images per detector forward pass, as `fer align --batch-size`
    device: str = "auto"
    threads: int | None = None
    runtime: str = "onnxruntime"  # an .onnx model: onnxruntime or openvino (fercli.export.RUNTIMES)
    annotate: Path | None = None  # write copies with boxes and labels drawn here (one video: an .mp4, or a folder)
    # One video, camera or stream is tracked frame by frame (fercli.video): these options apply there.
    webcam: int | None = None  # camera index
    live: bool = False  # read a video file as a live source (its own frame rate, dropping frames when behind)
    detect_every: int = 1  # detect and classify every K-th frame; the tracker carries boxes in between
    smooth: float = 0.5  # half-life (seconds) of each track's probability average; 0: raw
    out: Path | None = None  # folder for frames.csv, frames.jsonl, summary.json, timeline.png
    show: bool = False  # a window with the annotated frames (--show; --headless is the default)
    duration: float | None = None  # stop after this many seconds of input


# ---- fer data import ---------------------------------------------------------------------------------
# fercli.importers.FORMATS (its IMPORTERS table's names; a test checks they agree).
IMPORT_FORMATS = ("rafdb", "ferplus", "affectnet", "fer2013", "folder")


@dataclass
class ImportConfig:
    """Options of ``fer data import`` (also used by ``fer align`` on dataset roots)."""

    format: str
    src: Path
    out: Path | None = None  # default: the workspace's data/manifest.parquet
    classes: int | None = None  # 7 or 8; default: the dataset's own vocabulary
    images: str = "auto"  # rafdb: aligned | original | auto
    images_dir: Path | None = None  # fer2013: where the PNGs are written (default: beside the manifest)
    allow_missing: bool = False  # drop rows whose image is absent instead of failing
    rename_splits: str | None = None  # "valid=test[,...]": e.g. keep FERPlus valid untouched for the final report
    # folder: class folders without train/valid/test folders are split once, stratified and seeded
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)  # train, valid, test
    no_split: bool = False  # keep every image in train instead
    split_seed: int = 0


def parse_split_renames(spec: str | None) -> dict[str, str]:
    """``"valid=test,train=train"`` -> ``{"valid": "test", ...}``; both names must be manifest splits.

    A swap such as ``valid=test,test=valid`` is allowed: renames apply at once, not in sequence.
    """
    if not spec:
        return {}
    out: dict[str, str] = {}
    for part in spec.split(","):
        old, sep, new = (x.strip() for x in part.partition("="))
        if not sep or old not in SPLITS or new not in SPLITS:
            raise FerError(f"--rename-split {spec!r}: expected OLD=NEW pairs of {', '.join(SPLITS)}, e.g. valid=test")
        if old in out:
            raise FerError(f"--rename-split {spec!r}: {old!r} is renamed twice")
        out[old] = new
    return out


# ---- fer predict: which inputs are a video (fercli.video) ------------------------------------------
URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")
ANNOTATE_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov")  # what --annotate may name for a video (mp4v in an MP4 container)


def is_stream_url(text: str) -> bool:
    """True for inputs OpenCV opens as a network stream (``rtsp://``, ``http://`` ...)."""
    return text.lower().startswith(URL_SCHEMES)


def is_video_input(text: str) -> bool:
    """True for a stream URL or a file named like a video (``VIDEO_EXTS``)."""
    return is_stream_url(text) or Path(text).suffix.lower() in VIDEO_EXTS


def is_video_run(pcfg: Any) -> bool:
    """True when a :class:`fercli.predict.PredictConfig` names one video file or stream URL, or a camera."""
    return pcfg.webcam is not None or (len(pcfg.inputs) == 1 and is_video_input(pcfg.inputs[0]))
