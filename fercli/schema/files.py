"""Where artifacts live: workspace file names, a training run's directory, and reading any artifact's metadata."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from fercli.errors import FerError
from fercli.schema.checkpoint import CHECKPOINT_FORMAT, checkpoint_meta
from fercli.schema.parquet import read_parquet_meta
from fercli.schema.reports import REPORT_JSON

MANIFEST_NAME = "manifest.parquet"  # what `fer align SRC DST` writes inside DST
IMPORTED_MANIFEST = "data/manifest.parquet"  # default output of `fer data import`
CONFIG_FILES = ("fer.toml", "fer.yaml", "fer.yml")
STATE_FILE = ".fer/state.json"

# A training run's directory (`fer train`, `fer pretrain-teacher`).
BEST_CHECKPOINT = "best.pt"  # the selected epoch's weights (what the workspace records)
LAST_CHECKPOINT = "last.pt"  # resumable: the latest weights with the optimiser, schedule and RNG state
METRICS_CSV = "metrics.csv"  # one row per finished epoch
CURVES_PNG = "curves.png"  # accuracy and loss per epoch
RUN_FILES = (BEST_CHECKPOINT, LAST_CHECKPOINT, METRICS_CSV, CURVES_PNG)

# Default location of each artifact kind, relative to the workspace root.
ARTIFACT_FILES: dict[str, str] = {
    "dataset": f"aligned/{MANIFEST_NAME}",
    "teacher": f"teacher/{BEST_CHECKPOINT}",
    "labels": "labels/labels.parquet",
    "student": f"student/{BEST_CHECKPOINT}",
    "eval": f"eval/{REPORT_JSON}",
    "export": "export/model.onnx",
}

# Metadata beside a file that cannot hold it readably (ONNX, TorchScript): ``<file>.json``.
SIDECAR_SUFFIX = ".json"


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """The sidecar metadata file of ``path``: ``<file>.json`` beside it."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_artifact_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of any fercli artifact, by file type.

    Parquet: the ``fercli`` schema metadata. Checkpoints (``.pt``/``.pth``): every key but the
    weights, loaded with ``weights_only=True``. JSON reports: the object itself. Anything else
    (ONNX, TorchScript): a sidecar ``<file>.json`` written beside it.
    """
    path = Path(path)
    if not path.exists():
        raise FerError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet_meta(path)
    if suffix in (".pt", ".pth"):
        from fercli.fileio import safe_torch_load

        ckpt = safe_torch_load(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise FerError(f"{path}: not a fercli checkpoint (no format={CHECKPOINT_FORMAT!r} entry)")
        return checkpoint_meta(ckpt)
    if suffix == ".json":
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FerError(f"{path}: not valid JSON ({exc}); regenerate it") from exc
    sidecar = sidecar_path(path)
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    raise FerError(f"{path}: no fercli metadata (expected a sidecar {sidecar.name})")
