"""A resolved workspace artifact (:class:`Artifact`) and how it is summarised for `fer status` and
the "using ..." lines: short hashes, times, a run's summary, a manifest's labelled rows per split.

Apart from :mod:`fercli.workspace` (which resolves artifacts and tracks staleness) so that the status
report (:mod:`fercli.status`) can use it without importing the workspace back.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fercli.schema import METRICS_CSV


@dataclass
class Artifact:
    """A resolved artifact: its kind, path, metadata, and whether it came from the workspace."""

    kind: str
    path: Path
    meta: dict[str, Any]
    implicit: bool = False
    bundled: bool = False  # the model shipped inside the package (fercli.inference.bundled_model)

    @property
    def origin(self) -> str:
        """Where it came from, as the CLI says it: workspace, given or bundled."""
        return "bundled" if self.bundled else "workspace" if self.implicit else "given"

    @property
    def provenance(self) -> dict[str, Any]:
        return self.meta.get("provenance") or {}

    @property
    def classes(self) -> list[str] | None:
        return self.meta.get("classes")

    @property
    def created(self) -> str | None:
        return self.provenance.get("created")

    @property
    def summary(self) -> dict[str, Any]:
        return self.provenance.get("summary") or {}


def short_sha(sha: str | None) -> str:
    return (sha or "?")[:12]


def format_time(iso: str | None) -> str:
    if not iso:
        return "unknown time"
    try:
        return _dt.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return iso


def _metrics_rows(path: Path) -> int | None:
    """Epochs recorded in a run directory's metrics.csv (one row per finished epoch), or None."""
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return None
    return max(0, len(lines) - 1)


def run_summary(kind: str, path: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """An artifact's key figures as of now. A training run's best.pt is written at its best epoch, so
    the ``epochs_run`` it records stops there; the run's metrics.csv (one row per epoch) has the count."""
    if kind in ("teacher", "student") and "epochs_run" in summary:
        rows = _metrics_rows(Path(path).parent / METRICS_CSV)
        if rows is not None and rows > int(summary.get("epochs_run") or 0):
            summary = {**summary, "epochs_run": rows}
    return summary


def labelled_splits(path: Path) -> dict[str, int] | None:
    """Labelled rows with an image (status ok, where aligned) per split of a manifest, without pandas."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        if "split" not in names or "label" not in names:
            return None
        table = pq.read_table(path, columns=[c for c in ("split", "label", "status") if c in names])
    except Exception:  # unreadable: the stages say why when they read it
        return None
    splits, labels = table.column("split").to_pylist(), table.column("label").to_pylist()
    status = table.column("status").to_pylist() if "status" in names else [None] * len(splits)
    out: dict[str, int] = {}
    for split, label, st in zip(splits, labels, status):
        if label is not None and label >= 0 and st in (None, "ok"):
            out[split] = out.get(split, 0) + 1
    return out


def format_summary(summary: dict[str, Any]) -> str:
    parts = []
    for k, v in summary.items():
        if isinstance(v, float):
            v = f"{v:.4g}"
        elif isinstance(v, int):
            v = f"{v:,}"
        parts.append(f"{k} {v}")
    return ", ".join(parts)
