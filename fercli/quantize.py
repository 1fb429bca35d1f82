"""Quantised ONNX exports (`fer export --quantize`): static int8, dynamic int8 and fp16, each with a
parity report against the float32 export.

* ``int8``: static quantisation with ONNX Runtime's quantisation tools: QDQ format (QuantizeLinear /
  DequantizeLinear pairs that ONNX Runtime fuses into integer kernels when it loads the file),
  per-channel int8 weights, uint8 activations (U8S8: on this project's AVX512-VNNI CPU ONNX Runtime
  fused it into integer kernels fully and ran it 1.2-2x faster than its default S8S8, which left
  float convolutions and Q/DQ pairs behind), MinMax ranges from calibration images. The calibration images are a seeded sample (``--calib-size``, default 500) of
  the *training* split of a manifest (``--calib``), never the split a model is scored on; or a
  ``.npy`` array of decoded faces (uint8, ``(N, S, S, 3)`` RGB at the model's input size, the layout
  of fercli's decoded cache).
* ``int8-dynamic``: dynamic quantisation (int8 weights, activations quantised at run time); needs no
  calibration. Included for comparison: on CPU it is much slower for convolutional networks.
* ``fp16``: float16 weights and arithmetic (ONNX Runtime's own converter,
  ``onnxruntime.transformers.float16``), float32 input and output kept, so callers feed and read it
  like the float32 file.

The file keeps the float32 export's metadata (classes, preprocessing, ``temperature``, ``tta``) and
adds ``quantization`` (mode, format, calibration source and sha256, seed, image count, excluded
nodes). Every export is compared with the float32 export on the calibration images (random inputs
when a mode needs none and no images are at hand): top-1 agreement, the largest difference of any
calibrated probability (``softmax(logits / temperature)``) and of any logit. Below
``--min-agreement`` nothing is written.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fercli.errors import FerError
from fercli.schema import INPUT_NAME

if TYPE_CHECKING:
    from fercli.export_core import ExportConfig, ExportResult
    from fercli.workspace import Artifact, Workspace

MODES = ("int8", "int8-dynamic", "fp16")
MIN_CALIB = 50
DEFAULT_CALIB_SIZE = 500
# The top-1 agreement with float32 below which nothing is written (--min-agreement overrides).
# Measured on the bundled FERPlus model, 500 training images: fp16 1.000, int8 0.986, int8-dynamic 0.952.
DEFAULT_MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.95, "int8-dynamic": 0.90}
EXCLUDE_KEYWORDS = ("first-conv", "head", "depthwise")
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"}


def _require() -> Any:
    try:
        import onnx
        import onnxruntime.quantization  # noqa: F401
    except ImportError as exc:
        raise FerError(f"--quantize needs onnx and onnxruntime ({exc.name} is missing): pip install onnx onnxruntime") from None
    return onnx


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantisation tools log progress and advice at INFO/WARNING on the root logger."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(old)


# ---- calibration images ------------------------------------------------------------------------
@dataclass
class Calibration:
    """Normalised float32 images ``(N, 3, S, S)`` and where they came from."""

    x: np.ndarray
    source: str  # a manifest or .npy path, or "random"
    sha256: str | None
    split: str | None  # "train" for a manifest
    seed: int
    available: int  # images the sample was drawn from

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "split": self.split, "seed": self.seed,
                "images": int(len(self.x)), "drawn_from": self.available}


def check_calib_size(n: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < MIN_CALIB:
        raise FerError(f"--calib-size {n!r}: at least {MIN_CALIB} calibration images are needed")


def _sample(available: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(available, size=min(n, available), replace=False))


def _normalise(u8: np.ndarray, mean: list[float], std: list[float]) -> np.ndarray:
    """uint8 ``(N, S, S, 3)`` RGB -> float32 ``(N, 3, S, S)``, ``(x / 255 - mean) / std`` as fercli feeds models."""
    x = u8.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return ((x - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)).astype(np.float32)


def load_calibration(src: str | os.PathLike[str], meta: dict[str, Any], n: int = DEFAULT_CALIB_SIZE, seed: int = 0,
                     sha256: str | None = None) -> Calibration:
    """A seeded sample of ``n`` training images for a model described by export ``meta``.

    ``src`` is a manifest (its labelled ``train`` rows are sampled; its class list must be the
    model's) or a ``.npy`` uint8 array ``(N, S, S, 3)`` with ``S`` the model's input size.
    """
    check_calib_size(n)
    src = Path(src)
    size, classes = int(meta["input_size"]), list(meta["classes"])
    if not src.is_file():
        raise FerError(f"--calib {src}: no such file")
    if src.suffix.lower() == ".npy":
        try:
            arr = np.load(src, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise FerError(f"--calib {src}: not a NumPy array file ({exc})") from None
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
            raise FerError(f"--calib {src}: expected uint8 images (N, S, S, 3) RGB, got {arr.dtype} {tuple(arr.shape)}")
        if arr.shape[1:3] != (size, size):
            raise FerError(f"--calib {src}: calibration images are {arr.shape[1]}x{arr.shape[2]} but the model takes "
                           f"{size}x{size}; decode them at the model's input size")
        if len(arr) < MIN_CALIB:
            raise FerError(f"--calib {src}: {len(arr)} calibration images; at least {MIN_CALIB} are needed")
        idx = _sample(len(arr), n, seed)
        return Calibration(_normalise(np.asarray(arr[idx]), meta["mean"], meta["std"]), str(src), sha256, None, seed, len(arr))

    from fercli.schema import COL_PATH, read_manifest

    m = read_manifest(src)
    if list(m.classes) != classes:
        raise FerError(f"--calib {src}: the manifest has {len(m.classes)} classes ({', '.join(m.classes)}) but the model "
                       f"has {len(classes)} ({', '.join(classes)}); calibrate on images of the model's own class list")
    rows = m.labelled(["train"])
    if len(rows) < MIN_CALIB:
        raise FerError(f"--calib {src}: {len(rows)} labelled training images; at least {MIN_CALIB} are needed "
                       "(calibration never uses the valid or test split)")
    idx = _sample(len(rows), n, seed)
    sel = rows.iloc[idx]
    from fercli.transforms import decode_image

    u8 = np.stack([decode_image(m.root / p, size) for p in sel[COL_PATH]])
    return Calibration(_normalise(u8, meta["mean"], meta["std"]), str(src), sha256, "train", seed, len(rows))


def random_inputs(meta: dict[str, Any], n: int = 64, seed: int = 0) -> Calibration:
    """Seeded standard-normal inputs (for parity when no images are at hand, and for timing)."""
    size = int(meta["input_size"])
    x = np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)
    return Calibration(x, "random", None, None, seed, n)


# ---- quantisation -------------------------------------------------------------------------------
def quantized_reason(proto: Any, meta: dict[str, Any] | None = None) -> str | None:
    """Why an ONNX model counts as quantised already (its fercli metadata or its graph), or None."""
    onnx = _require()
    q = (meta or {}).get("quantization")
    if q:
        return f"fercli {q.get('mode', q) if isinstance(q, dict) else q}"
    ops = sorted({n.op_type for n in proto.graph.node if n.op_type in _QUANT_OPS or n.op_type.startswith("QLinear")})
    if ops:
        return "its graph has " + ", ".join(ops[:3])
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer):
        return "its weights are float16"
    return None


def _group(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def resolve_exclude(proto: Any, names: tuple[str, ...] | list[str]) -> list[str]:
    """Node names to keep in float32: keywords ``first-conv`` (the stem convolution), ``head`` (every
    node after the last global pooling, i.e. the classifier) and ``depthwise`` (grouped convolutions),
    or exact node names of the float32 graph."""
    nodes = list(proto.graph.node)
    out: list[str] = []
    known = {n.name for n in nodes}
    for name in names:
        if name == "first-conv":
            conv = next((n for n in nodes if n.op_type == "Conv"), None)
            out += [conv.name] if conv is not None else []
        elif name == "head":
            last_pool = max((i for i, n in enumerate(nodes) if n.op_type in ("GlobalAveragePool", "ReduceMean")), default=None)
            out += [n.name for n in nodes[last_pool:]] if last_pool is not None else []
        elif name == "depthwise":
            out += [n.name for n in nodes if n.op_type == "Conv" and _group(n) > 1]
        elif name in known:
            out.append(name)
        else:
            raise FerError(f"--quant-exclude {name!r} is neither a keyword ({', '.join(EXCLUDE_KEYWORDS)}) nor a node "
                           "of the float32 graph")
    return list(dict.fromkeys(out))


class _Reader:
    """ONNX Runtime calibration reader over batches of ``x``."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 32) -> None:
        self._batches = iter([{input_name: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # part of the interface in recent versions; one pass is all MinMax needs
        pass


def quantize_bytes(fp32: bytes, mode: str, calib: np.ndarray | None = None, exclude: tuple[str, ...] = (),
                   input_name: str = INPUT_NAME, activations: str = "uint8", quant_format: str = "QDQ",
                   per_channel: bool = True) -> tuple[bytes, dict[str, Any]]:
    """Quantise a float32 ONNX model (bytes) in ``mode``; returns the new model and what was done.

    Metadata is not copied here (the caller sets it). ``calib`` (normalised float32 images) is
    required for ``int8``. ``activations`` (uint8 or int8), ``quant_format`` (QDQ or QOperator) and
    ``per_channel`` are fixed by `fer export`; benchmarks/quantize_report.py varies them to show
    what was tried.
    """
    onnx = _require()
    if mode not in MODES:
        raise FerError(f"--quantize {mode!r} is not one of {', '.join(MODES)}")
    proto = onnx.load_from_string(fp32)
    why = quantized_reason(proto)
    if why:
        raise FerError(f"the model is already quantised ({why}); quantise the float32 export instead")
    info: dict[str, Any] = {"mode": mode}
    if mode == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        if exclude:
            raise FerError("--quant-exclude applies to --quantize int8 and int8-dynamic")
        with _quiet():
            out = convert_float_to_float16(proto, keep_io_types=True)
        info.update(format="float16 weights and arithmetic, float32 input and output", tool="onnxruntime.transformers.float16")
        return out.SerializeToString(), info

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    excluded = resolve_exclude(proto, exclude)
    with tempfile.TemporaryDirectory(prefix="fer-quant-") as tmp, _quiet():
        src, pre, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx", Path(tmp) / "q.onnx"
        src.write_bytes(fp32)
        try:  # shape inference and basic graph optimisation, as ONNX Runtime recommends before quantising
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - optional step: quantise the graph as exported
            pre = src
        if mode == "int8":
            if calib is None or len(calib) < MIN_CALIB:
                raise FerError(f"--quantize int8 needs at least {MIN_CALIB} calibration images (--calib)")
            quantize_static(str(pre), str(dst), _Reader(calib, input_name), quant_format=getattr(QuantFormat, quant_format),
                            per_channel=per_channel,
                            activation_type=QuantType.QUInt8 if activations == "uint8" else QuantType.QInt8,
                            weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                            nodes_to_exclude=excluded or None)
            info.update(format=quant_format, weights="int8, " + ("per channel" if per_channel else "per tensor"),
                        activations=f"{activations}, per tensor", ranges="MinMax")
        else:
            quantize_dynamic(str(pre), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                             nodes_to_exclude=excluded or None)
            info.update(format="dynamic (ConvInteger/MatMulInteger)", weights="int8, per channel",
                        activations="uint8, quantised at run time")
        info.update(tool="onnxruntime.quantization", excluded=exclude and list(exclude) or [],
                    excluded_nodes=len(excluded))
        return dst.read_bytes(), info


# ---- parity -------------------------------------------------------------------------------------
def _softmax(z: np.ndarray, t: float) -> np.ndarray:
    z = z.astype(np.float64) / t
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def run_batches(session: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def parity(reference: Any, candidate: Any, x: np.ndarray, temperature: float = 1.0) -> dict[str, Any]:
    """Top-1 agreement and the largest probability / logit difference of ``candidate`` against
    ``reference`` (two ONNX Runtime sessions) on the images ``x``."""
    ref, got = run_batches(reference, x), run_batches(candidate, x)
    p_ref, p_got = _softmax(ref, temperature), _softmax(got, temperature)
    return {"images": int(len(x)), "top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
            "max_prob_diff": float(np.abs(p_ref - p_got).max()), "mean_prob_diff": float(np.abs(p_ref - p_got).max(1).mean()),
            "max_logit_diff": float(np.abs(ref.astype(np.float64) - got).max()), "temperature": float(temperature)}


# ---- fer export --quantize ---------------------------------------------------------------------
def default_out(workspace: Workspace, mode: str) -> Path:
    return workspace.default_path("export").with_name(f"model_{mode.replace('-', '_')}.onnx")


def check_options(cfg: ExportConfig) -> None:
    """The option combinations `fer export --quantize` refuses."""
    if cfg.quantize not in MODES:
        raise FerError(f"--quantize {cfg.quantize!r} is not one of {', '.join(MODES)}")
    if cfg.format != "onnx":
        hint = "; for a float16 fercli checkpoint use --half" if cfg.format == "checkpoint" else ""
        raise FerError(f"--quantize applies to --format onnx only (not {cfg.format}){hint}")
    check_calib_size(cfg.calib_size)
    if cfg.min_agreement is not None and not (0 <= cfg.min_agreement <= 1):
        raise FerError(f"--min-agreement {cfg.min_agreement!r} is out of range: it must be in [0, 1]")
    if cfg.quant_exclude and cfg.quantize == "fp16":
        raise FerError("--quant-exclude applies to --quantize int8 and int8-dynamic")


def _calibration(cfg: ExportConfig, workspace: Workspace, meta: dict[str, Any]) -> Calibration | None:
    """The calibration images: --calib, else the workspace's dataset; None when neither exists."""
    src = Path(cfg.calib) if cfg.calib is not None else workspace.current_path("dataset")
    if src is None:
        if cfg.quantize == "int8":
            raise FerError("--quantize int8 needs calibration images: pass --calib MANIFEST (a seeded sample of its "
                           "train split is used) or --calib IMAGES.npy")
        return None
    if not src.is_file():
        raise FerError(f"--calib {src}: no such file")
    return load_calibration(src, meta, cfg.calib_size, cfg.seed, workspace.sha256(src))


def run_quantized_export(cfg: ExportConfig, ws: Workspace, art: Artifact,
                         command: str | None = None) -> tuple[ExportResult, Artifact]:
    """`fer export --quantize MODE`: a checkpoint (or a float32 fercli ONNX export) -> a quantised ONNX file."""
    from fercli.export_core import (ExportResult, check_onnx_parity, export_meta, onnx_with_meta, ort_session,
                               read_export_meta)
    from fercli.fileio import atomic_write_bytes, atomic_write_json
    from fercli.schema import make_provenance, sidecar_path

    onnx = _require()
    check_options(cfg)
    mode = cfg.quantize
    assert mode is not None
    out = Path(cfg.out) if cfg.out is not None else default_out(ws, mode)
    if out.suffix.lower() != ".onnx":
        raise FerError(f"{out}: a quantised export is an ONNX file; name it *.onnx")
    eager: dict[int, float] = {}
    if Path(art.path).suffix.lower() == ".onnx":
        meta = read_export_meta(art.path)
        why = quantized_reason(onnx.load(str(art.path)), meta)
        if why:
            raise FerError(f"{art.path}: already quantised ({why}); quantise the float32 export or the checkpoint instead")
        fp32 = Path(art.path).read_bytes()
        inputs = {k: v for k, v in (art.provenance.get("inputs") or {}).items() if k == "student"}
        inputs["source"] = ws.input_ref(art)
    else:
        from fercli.checkpoint import model_from_checkpoint

        model, ckpt = model_from_checkpoint(art.path)
        meta = export_meta(ckpt, "onnx")
        fp32 = onnx_with_meta(model, meta, cfg.opset)
        eager = check_onnx_parity(fp32, model, meta, cfg, str(art.path))
        inputs = {"student": ws.input_ref(art)}
    if out.resolve() == Path(art.path).resolve():
        raise FerError(f"{out}: would overwrite the model being quantised; pass another --out")
    calib = _calibration(cfg, ws, meta)
    qbytes, info = quantize_bytes(fp32, mode, None if calib is None else calib.x, tuple(cfg.quant_exclude))
    check = calib if calib is not None else random_inputs(meta, 64, cfg.seed)
    info["calibration"] = check.describe() if mode == "int8" else None
    qmeta = {**meta, "quantization": info}
    proto = onnx.load_from_string(qbytes)
    del proto.metadata_props[:]
    data = onnx_with_meta(None, qmeta, proto=proto)
    report = parity(ort_session(fp32), ort_session(data), check.x, float(meta.get("temperature") or 1.0))
    report["inputs"] = "calibration images" if calib is not None else "random inputs (no --calib and no workspace dataset)"
    report["source"] = check.source
    floor = cfg.min_agreement if cfg.min_agreement is not None else DEFAULT_MIN_AGREEMENT[mode]
    report["min_agreement"] = floor
    if report["top1_agreement"] < floor:
        hint = "; try --quant-exclude first-conv,head" if mode != "fp16" else ""
        raise FerError(f"{art.path}: the {mode} export agrees with float32 on {report['top1_agreement']:.1%} of "
                       f"{report['images']} {report['inputs']} (--min-agreement {floor:g}); nothing was written{hint}")
    report["fp32_bytes"], report["bytes"] = len(fp32), len(data)
    summary = {"format": "onnx", "arch": meta.get("arch"), "quantization": mode,
               "top1_agreement": round(report["top1_agreement"], 4)}
    sidecar_meta = {**qmeta, "quantized_parity": report,
                    "parity": {"batches": list(eager), "max_abs_diff": max(eager.values()) if eager else None,
                               "against": "eager PyTorch (the float32 graph, before quantisation)"},
                    "provenance": make_provenance("export", inputs=inputs, summary=summary, command=command)}
    atomic_write_bytes(out, data)
    sidecar = sidecar_path(out)
    atomic_write_json(sidecar, sidecar_meta)
    ws.record("export", out)
    worst = max(eager.values()) if eager else None
    return ExportResult(out, sidecar, "onnx", worst, eager, sidecar_meta), art


def profile_ops(data: bytes | str | os.PathLike[str], input_size: int, batch: int = 1, runs: int = 200,
                threads: int = 2, warmup: int = 20) -> dict[str, Any]:
    """ONNX Runtime's per-node profile of a model, summed per operator type (microseconds per run).

    The profiler's own overhead inflates every figure (compare models by their shares, and time
    them with :func:`fercli.bench.time_interleaved`); ``ops`` is sorted by time. Operator types are
    those of the graph ONNX Runtime actually runs (after its fusions: ``QLinearConv``,
    ``ReorderInput``, ``FusedConv`` ...).
    """
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="fer-prof-") as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        sess0 = ort.InferenceSession(data if isinstance(data, bytes) else str(data), so, providers=["CPUExecutionProvider"])
        name = sess0.get_inputs()[0].name
        x = np.random.default_rng(0).standard_normal((batch, 3, input_size, input_size)).astype(np.float32)
        for _ in range(warmup):
            sess0.run(None, {name: x})
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "prof")
        sess = ort.InferenceSession(data if isinstance(data, bytes) else str(data), so, providers=["CPUExecutionProvider"])
        for _ in range(warmup + runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict[str, list[float]] = {}
    run_us: list[float] = []
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            run_us.append(float(e["dur"]))
        elif e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            op = e["args"]["op_name"]
            per_op.setdefault(op, [0.0, 0])
            per_op[op][0] += float(e["dur"])
            per_op[op][1] += 1
    n = max(len(run_us), 1)
    kernel = sum(v[0] for v in per_op.values()) / n
    ops = sorted(({"op": k, "us_per_run": v[0] / n, "nodes": v[1] // n, "share": v[0] / n / kernel if kernel else 0.0}
                  for k, v in per_op.items()), key=lambda r: -r["us_per_run"])
    return {"batch": batch, "threads": threads, "runs": len(run_us), "run_us_median": float(np.median(run_us[warmup:] or run_us)),
            "kernel_us_per_run": kernel, "nodes_per_run": sum(r["nodes"] for r in ops), "ops": ops}


def describe_quantization(meta: dict[str, Any]) -> str:
    """One line for tables: what the file holds."""
    q = meta.get("quantization")
    if not q:
        return "float32"
    return f"{q['mode']} ({q.get('format', '')})"


__all__ = ["Calibration", "DEFAULT_CALIB_SIZE", "DEFAULT_MIN_AGREEMENT", "MIN_CALIB", "MODES", "check_options",
           "load_calibration", "parity", "profile_ops", "quantize_bytes", "quantized_reason", "random_inputs", "resolve_exclude",
           "run_quantized_export"]
