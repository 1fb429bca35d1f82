"""What every export path shares (the float exports of :mod:`fercli.export` and the quantised ones of
:mod:`fercli.quantize`): the config and result types, ONNX/TorchScript/OpenVINO sessions, the metadata
that travels with a file, and the parity check against the eager model. Kept apart from
:mod:`fercli.export` so that :mod:`fercli.quantize` can use it while ``run_export`` dispatches to
quantisation: no import cycle.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fercli.probability import model_temperature, model_tta
from fercli.checkpoint import library_versions
from fercli.choices import RUNTIMES  # noqa: F401  (what runs an exported .onnx file in fer eval / predict / bench)
from fercli.errors import FerError
from fercli.stage_configs import ExportConfig  # light, for the command; re-exported here
from fercli.schema import (
    INPUT_NAME,
    ONNX_META_KEY,
    OUTPUT_NAME,
    SOURCE_PROVENANCE_KEY,
    TORCHSCRIPT_META_FILE,
    TRAIN_STATE_KEY,
    export_metadata,
    onnx_plain_props,
    sidecar_path,
)
from fercli.workspace import Artifact, Workspace

FORMATS = ("onnx", "torchscript", "checkpoint")
SUFFIX = {"onnx": ".onnx", "torchscript": ".torchscript", "checkpoint": ".pt"}
HALF_TOLERANCE = 5e-2  # float16 weights: ~2e-3 measured on FERPlus-trained 64x64 models; 25x headroom


@dataclass
class ExportResult:
    path: Path
    sidecar: Path
    format: str
    max_abs_diff: float
    parity: dict[int, float]  # batch size -> max abs difference
    meta: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        m = self.meta
        return {"path": str(self.path), "sidecar": str(self.sidecar), "format": self.format,
                "arch": m.get("arch"), "classes": m.get("classes"), "input_size": m.get("input_size"),
                "mean": m.get("mean"), "std": m.get("std"), "temperature": m.get("temperature"), "tta": m.get("tta"),
                "max_abs_diff": self.max_abs_diff,
                "parity": {str(k): v for k, v in self.parity.items()}, "bytes": self.path.stat().st_size,
                **{k: m[k] for k in ("quantization", "quantized_parity") if k in m}}


def require_onnx() -> tuple[Any, Any]:
    try:
        import onnx
        import onnxruntime
    except ImportError as exc:
        raise FerError(f"ONNX export needs onnx and onnxruntime ({exc.name} is missing): pip install onnx onnxruntime") from None
    return onnx, onnxruntime


def onnx_bytes(model: nn.Module, input_size: int, opset: int = 17, batch: int = 2) -> bytes:
    """Export ``model`` to ONNX in memory with a dynamic batch axis.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs no extra package, handles every
    registered model, and its graph is what ONNX Runtime's optimiser expects. The example batch is
    2, not 1, so no shape is specialised to a batch of one.
    """
    x = torch.randn(batch, 3, input_size, input_size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notice and tracer warnings
        torch.onnx.export(
            model.eval(), (x,), buf, dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buf.getvalue()


def torchscript_module(model: nn.Module, input_size: int, batch: int = 2, device: str = "cpu") -> torch.jit.ScriptModule:
    """Trace ``model`` (eval mode, on ``device``) into TorchScript.

    Batch sizes stay dynamic because every reshape reads the batch from the tensor at run time.
    """
    x = torch.randn(batch, 3, input_size, input_size, device=device)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(model.eval(), x)


def ort_session(data: bytes | str | os.PathLike[str], threads: int | None = None, device: str = "cpu") -> Any:
    """An ONNX Runtime session with full graph optimisation (CPU, or CUDA when asked and available)."""
    _, ort = require_onnx()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or torch.get_num_threads()
    so.inter_op_num_threads = 1
    # No busy-waiting between runs: spinning threads would steal the cores from PyTorch when both
    # run in one process (fer bench interleaves them), and from anything else on a small machine.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise FerError("onnxruntime has no CUDA provider here: install onnxruntime-gpu or use --device cpu")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ort.InferenceSession(data if isinstance(data, bytes) else str(data), so, providers=providers)


class _Input:
    def __init__(self, name: str) -> None:
        self.name = name


class OpenVINOSession:
    """An ONNX file compiled by OpenVINO's CPU plugin, with the part of ONNX Runtime's
    ``InferenceSession`` interface fercli uses (``get_inputs()[0].name``, ``run(None, feed)``).

    Float32 precision is requested: on CPUs with AVX512-BF16 or AMX OpenVINO would otherwise compute
    in bfloat16. The batch axis stays dynamic.
    """

    def __init__(self, data: bytes | str | os.PathLike[str], threads: int | None = None) -> None:
        import tempfile

        try:
            import openvino as ov
        except ImportError:
            raise FerError("the openvino runtime is not installed: pip install openvino (or use onnxruntime)") from None
        config = {"NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        core = ov.Core()
        if isinstance(data, bytes):
            with tempfile.TemporaryDirectory(prefix="fer-ov-") as tmp:
                path = Path(tmp) / "model.onnx"
                path.write_bytes(data)
                self._compiled = core.compile_model(str(path), "CPU", config)
        else:
            self._compiled = core.compile_model(str(data), "CPU", config)
        self._request = self._compiled.create_infer_request()
        self._name = self._compiled.inputs[0].get_any_name()

    def get_inputs(self) -> list[_Input]:
        return [_Input(self._name)]

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self._request.infer({0: np.ascontiguousarray(feed[self._name], dtype=np.float32)})
        return [np.asarray(result[self._compiled.outputs[0]]).copy()]


def runtime_session(data: bytes | str | os.PathLike[str], runtime: str = "onnxruntime", threads: int | None = None,
                    device: str = "cpu") -> Any:
    """An ONNX model ready to run on ``runtime`` (onnxruntime or openvino, CPU)."""
    if runtime == "onnxruntime":
        return ort_session(data, threads=threads, device=device)
    if runtime == "openvino":
        if device != "cpu":
            raise FerError(f"the openvino runtime runs on cpu here, not {device}; use --device cpu")
        return OpenVINOSession(data, threads)
    raise FerError(f"unknown runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")


def export_meta(ckpt: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The metadata an export of ``ckpt`` carries (:func:`fercli.schema.export_metadata`), its calibration checked."""
    temperature = model_temperature(ckpt, "checkpoint")
    return export_metadata(ckpt, fmt, temperature, model_tta(ckpt, "checkpoint"), library_versions())


def slim_checkpoint(ckpt: dict[str, Any], half: bool, provenance: dict[str, Any]) -> dict[str, Any]:
    """``ckpt`` for inference only: no training state; floating-point weights in float16 if ``half``.

    Integer buffers (BatchNorm's ``num_batches_tracked``) keep their dtype. The training config and
    metrics stay, so the file still says how the model was made.
    """
    state = {k: (v.half() if half and v.is_floating_point() else v).clone() for k, v in ckpt["state_dict"].items()}
    slim = {k: v for k, v in ckpt.items() if k not in (TRAIN_STATE_KEY, "state_dict", "provenance")}
    return {**slim, "state_dict": state, "weights_dtype": "float16" if half else "float32",
            SOURCE_PROVENANCE_KEY: ckpt.get("provenance"), "provenance": provenance}


def eager_parity(run: Any, model: nn.Module, input_size: int, batches: tuple[int, ...], seed: int) -> dict[int, float]:
    gen = torch.Generator().manual_seed(seed)
    diffs = {}
    with torch.inference_mode():
        for b in batches:
            x = torch.randn(b, 3, input_size, input_size, generator=gen)
            ref = model(x).numpy()
            got = np.asarray(run(x))
            if got.shape != ref.shape:
                raise FerError(f"exported model returned shape {got.shape} for a batch of {b}, expected {ref.shape}")
            diffs[b] = float(np.abs(got - ref).max())
    return diffs


def resolve_checkpoint(workspace: Workspace, ckpt: str | os.PathLike[str] | None = None,
                       quantize: str | None = None) -> Artifact:
    """The checkpoint to export: ``ckpt`` if given, else the workspace's current student. With
    ``quantize``, a float32 ONNX file made by `fer export` is accepted too."""
    suffix = Path(ckpt).suffix.lower() if ckpt is not None else ""
    if ckpt is not None and quantize and suffix == ".onnx":
        if not Path(ckpt).is_file():
            raise FerError(f"{ckpt}: no such file")
        sidecar = sidecar_path(ckpt)
        return workspace.resolve("export", ckpt) if sidecar.is_file() else Artifact("export", Path(ckpt), {})
    if ckpt is not None and suffix not in (".pt", ".pth"):
        raise FerError(f"{ckpt}: fer export takes a fercli checkpoint (.pt or .pth), not {suffix or 'this file'}"
                       + (" (an .onnx export is accepted with --quantize)" if suffix == ".onnx" else ""))
    return workspace.resolve("student", ckpt)


def onnx_with_meta(model: nn.Module | None, meta: dict[str, Any], opset: int = 17, proto: Any = None) -> bytes:
    """The ONNX file of ``model`` (or an already built ``proto``) with fercli's metadata in ``metadata_props``."""
    onnx, _ = require_onnx()
    if proto is None:
        assert model is not None
        proto = onnx.load_from_string(onnx_bytes(model, int(meta["input_size"]), opset))
    for key, value in onnx_plain_props(meta).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"fercli {meta['arch']} expression classifier: {', '.join(meta['classes'])}"
    return proto.SerializeToString()


def check_onnx_parity(data: bytes, model: nn.Module, meta: dict[str, Any], cfg: ExportConfig, name: str) -> dict[int, float]:
    """Run the ONNX file with ONNX Runtime against eager ``model``; refuse above ``cfg.tolerance`` (1e-4)."""
    session = ort_session(data)
    parity = eager_parity(lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0], model, int(meta["input_size"]),
                     cfg.parity_batches, cfg.seed)
    tolerance = cfg.tolerance if cfg.tolerance is not None else 1e-4
    worst = max(parity.values())
    if not np.isfinite(worst) or worst > tolerance:
        raise FerError(f"{name}: onnx export differs from eager PyTorch by {worst:.3g} "
                       f"(max abs logit difference, tolerance {tolerance:g}); nothing was written")
    return parity


def read_export_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata stored *inside* an exported file (no sidecar needed)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        onnx, _ = require_onnx()
        proto = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        if ONNX_META_KEY not in props:
            raise FerError(f"{path}: ONNX file without fercli metadata; export it with `fer export`")
        return json.loads(props[ONNX_META_KEY])
    extra = {TORCHSCRIPT_META_FILE: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except RuntimeError as exc:
        raise FerError(f"{path}: not a TorchScript archive ({str(exc).splitlines()[0]})") from exc
    if not extra[TORCHSCRIPT_META_FILE]:
        raise FerError(f"{path}: TorchScript file without fercli metadata; export it with `fer export`")
    return json.loads(extra[TORCHSCRIPT_META_FILE])
