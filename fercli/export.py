"""`fer export`: a checkpoint -> an ONNX or TorchScript file that runs without fercli, or a slim
inference checkpoint (no optimiser state, optionally fp16 weights) that fercli loads like any other.

The exported graph takes a float32 batch ``(N, 3, S, S)`` (dynamic N) normalised with the stored
mean/std and returns raw logits ``(N, classes)``. The class list, preprocessing and calibration
(``temperature``: probabilities are ``softmax(logits / temperature)``; ``tta``: the recommended
test-time augmentation) travel with the file. The temperature is stored, not folded into the graph,
so the output means the same in every format (``Classifier.logits`` stays raw everywhere) and the
parity check compares the very logits the eager model produces:

* ONNX: ``metadata_props`` (``fercli`` = the JSON below, plus ``classes``, ``input_size``, ``mean``,
  ``std``, ``temperature``, ``tta`` as plain strings for other runtimes; :mod:`fercli.schema.exports`
  defines these and the metadata's keys);
* TorchScript: an extra file ``fercli.json`` inside the archive (``torch.jit.load(path,
  _extra_files={"fercli.json": ""})``);
* checkpoint: a fercli checkpoint (``.pt``) without ``train_state``; with ``--half`` its floating-point
  weights are stored as float16 (``weights_dtype``) and widened back to float32 when loaded, which
  halves the file at no cost in speed (fercli computes in float32) and a small, checked, logit error;
* all: a sidecar ``<file>.json`` with the same metadata and provenance (what ``fer status`` reads).

Before the file is moved into place it is loaded back with its runtime (ONNX Runtime or
``torch.jit.load``, or fercli's own loader) and compared with the eager model on random batches of
several sizes; above the tolerance (1e-4 by default, 5e-2 for ``--half``) nothing is written.
"""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from fercli.checkpoint import model_from_checkpoint
from fercli.errors import FerError
from fercli.export_core import (
    FORMATS,
    HALF_TOLERANCE,
    RUNTIMES,
    SUFFIX,
    ExportConfig,
    ExportResult,
    OpenVINOSession,
    check_onnx_parity,
    export_meta,
    onnx_bytes,
    onnx_with_meta,
    ort_session,
    read_export_meta,
    resolve_checkpoint,
    runtime_session,
    slim_checkpoint,
    torchscript_module,
    eager_parity,
    require_onnx,
)
from fercli.fileio import atomic_write_bytes, atomic_write_json, safe_torch_load
from fercli.schema import (
    INPUT_NAME,
    TORCHSCRIPT_META_FILE,
    make_provenance,
    sidecar_path,
)
from fercli.workspace import Artifact, Workspace


def run_export(cfg: ExportConfig, ws: Workspace, ckpt: str | os.PathLike[str] | Artifact | None = None,
               command: str | None = None) -> tuple[ExportResult, Artifact]:
    """Export a checkpoint (default: the workspace's student), check parity, write it and its sidecar.

    The file is written atomically and only when every parity batch is within ``cfg.tolerance``;
    it then becomes the workspace's current export.
    """
    if cfg.format not in FORMATS:
        raise FerError(f"unknown export format {cfg.format!r}; use one of {', '.join(FORMATS)}")
    if cfg.half and cfg.format != "checkpoint":
        raise FerError(f"--half applies to --format checkpoint only (not {cfg.format})")
    if cfg.quantize is not None:
        from fercli.quantize import check_options, run_quantized_export

        check_options(cfg)
        art = ckpt if isinstance(ckpt, Artifact) else resolve_checkpoint(ws, ckpt, cfg.quantize)
        return run_quantized_export(cfg, ws, art, command)
    tolerance = cfg.tolerance if cfg.tolerance is not None else (HALF_TOLERANCE if cfg.half else 1e-4)
    art = ckpt if isinstance(ckpt, Artifact) else resolve_checkpoint(ws, ckpt)
    model, meta_ckpt = model_from_checkpoint(art.path)
    size = int(meta_ckpt["input_size"])
    out = Path(cfg.out) if cfg.out is not None else ws.default_path("export").with_suffix(SUFFIX[cfg.format])
    if cfg.format == "torchscript" and out.suffix.lower() in (".pt", ".pth"):
        raise FerError(f"{out}: .pt/.pth names are reserved for checkpoints; name the TorchScript file *.torchscript")
    if cfg.format == "checkpoint" and out.suffix.lower() not in (".pt", ".pth"):
        raise FerError(f"{out}: a checkpoint export must be named *.pt or *.pth")
    if cfg.format == "checkpoint" and out.resolve() == Path(art.path).resolve():
        raise FerError(f"{out}: would overwrite the checkpoint being exported; pass another --out")
    meta = export_meta(meta_ckpt, cfg.format)
    inputs = {"student": ws.input_ref(art)}

    if cfg.format == "onnx":
        onnx, _ = require_onnx()
        data = onnx_with_meta(None, meta, proto=onnx.load_from_string(onnx_bytes(model, size, cfg.opset)))
        session = ort_session(data)
        parity = eager_parity(lambda x: session.run(None, {INPUT_NAME: x.numpy()})[0], model, size, cfg.parity_batches, cfg.seed)
    elif cfg.format == "checkpoint":
        slim = slim_checkpoint(meta_ckpt, cfg.half, make_provenance(
            "export", inputs=inputs, summary={"format": "checkpoint", "arch": meta["arch"], "half": cfg.half},
            command=command))
        buf = io.BytesIO()
        torch.save(slim, buf)
        data = buf.getvalue()
        reloaded, _ = model_from_checkpoint(safe_torch_load(io.BytesIO(data), path=out))
        meta = {**meta, "weights_dtype": slim["weights_dtype"]}
        parity = eager_parity(lambda x: reloaded(x).numpy(), model, size, cfg.parity_batches, cfg.seed)
    else:
        scripted = torchscript_module(model, size)
        buf = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.9+ marks TorchScript deprecated; it still works
            torch.jit.save(scripted, buf, _extra_files={TORCHSCRIPT_META_FILE: json.dumps(meta)})
            data = buf.getvalue()
            reloaded = torch.jit.load(io.BytesIO(data), map_location="cpu")  # check what will be on disk
        parity = eager_parity(lambda x: reloaded(x).numpy(), model, size, cfg.parity_batches, cfg.seed)

    worst = max(parity.values())
    if not np.isfinite(worst) or worst > tolerance:
        raise FerError(f"{art.path}: {cfg.format} export differs from eager PyTorch by {worst:.3g} "
                       f"(max abs logit difference, tolerance {tolerance:g}); nothing was written")
    summary = {"format": cfg.format, "arch": meta["arch"], "max_abs_diff": worst}
    sidecar_meta = {**meta, "parity": {"batches": list(parity), "max_abs_diff": worst, "tolerance": tolerance},
                    "provenance": make_provenance("export", inputs=inputs, summary=summary, command=command)}
    atomic_write_bytes(out, data)
    sidecar = sidecar_path(out)
    atomic_write_json(sidecar, sidecar_meta)
    ws.record("export", out)
    return ExportResult(out, sidecar, cfg.format, worst, parity, sidecar_meta), art


# the shared pieces live in fercli.export_core; importable from here too
__all__ = [
    "FORMATS",
    "HALF_TOLERANCE",
    "RUNTIMES",
    "SUFFIX",
    "ExportConfig",
    "ExportResult",
    "OpenVINOSession",
    "check_onnx_parity",
    "export_meta",
    "onnx_bytes",
    "onnx_with_meta",
    "ort_session",
    "read_export_meta",
    "resolve_checkpoint",
    "runtime_session",
    "slim_checkpoint",
    "torchscript_module",
    "run_export",
]
