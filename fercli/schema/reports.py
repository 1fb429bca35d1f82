"""`fer eval`'s report directory: file names, the ``report.json`` header, the prediction table's columns.

``robustness.json`` and ``robustness.png`` (`fer eval --robustness`, :mod:`fercli.robustness`) are
written into the same directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fercli.schema.common import SCHEMA_VERSION, now_iso

REPORT_JSON = "report.json"  # every figure and how it was made (the workspace's eval artifact)
PREDICTIONS_CSV = "predictions.csv"  # one row per image: PREDICTION_COLUMNS, then p_<class>
CONFUSION_CSV = "confusion.csv"  # counts, rows = true class (first column CONFUSION_INDEX)
CONFUSION_PNG = "confusion.png"
RELIABILITY_PNG = "reliability.png"
# report.json's "files": key -> file name
EVAL_FILES = {"predictions": PREDICTIONS_CSV, "confusion_csv": CONFUSION_CSV, "confusion_png": CONFUSION_PNG,
              "reliability_png": RELIABILITY_PNG}
ROBUSTNESS_JSON = "robustness.json"
ROBUSTNESS_PNG = "robustness.png"

PREDICTION_COLUMNS = ("path", "label", "pred")
PROB_PREFIX = "p_"  # p_<class>: the predicted probability of that class
CONFUSION_INDEX = "true \\ predicted"


def prob_columns(classes: Sequence[str]) -> list[str]:
    """The probability columns of ``predictions.csv``, in class order."""
    return [f"{PROB_PREFIX}{c}" for c in classes]


def report_header(kind: str) -> dict[str, Any]:
    """The first keys of a JSON report (``eval``, ``robustness``): schema version, kind, creation time."""
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "created": now_iso()}


def model_ref(path: str, sha256: str, kind: str, arch: str, classes: Sequence[str], input_size: int) -> dict[str, Any]:
    """A report's ``model`` block: which file was scored and how it reads its input."""
    return {"path": path, "sha256": sha256, "kind": kind, "arch": arch, "classes": list(classes),
            "input_size": input_size}


def manifest_ref(path: str, sha256: str, split: str) -> dict[str, Any]:
    """A report's ``manifest`` block: which rows were scored."""
    return {"path": path, "sha256": sha256, "split": split}
