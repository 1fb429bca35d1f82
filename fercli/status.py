"""`fer status`'s report: every artifact of the pipeline in the workspace, stale or not, and the
command to run next (with the options the dataset's splits require)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fercli.errors import FerError
from fercli.pipeline import PIPELINE, STAGES, Stage
from fercli.artifact import Artifact, run_summary

if TYPE_CHECKING:
    from fercli.workspace import Workspace


def status_report(ws: Workspace) -> dict[str, Any]:
    """Every artifact kind: where it is, when made, from what, stale or not; and the next stage
    (with the options the dataset needs: ``--val-fraction`` without a valid split, ``--split
    valid`` without a test split)."""
    rows = []
    states: dict[str, str] = {}
    next_cmd = None
    splits: dict[str, int] | None = None  # labelled images per split of the current dataset
    for stage in PIPELINE:
        path = ws.current_path(stage.kind)
        row: dict[str, Any] = {"kind": stage.kind, "path": None, "state": "missing", "made_by": stage.command}
        if path is not None:
            row["path"] = ws.rel(path)
            try:
                info = ws.artifact_info(path)
                art = Artifact(stage.kind, path, info, implicit=True)
            except (FerError, OSError) as exc:
                row.update(state="unreadable", problem=str(exc))
            else:
                if stage.kind == "dataset":
                    splits = info.get("labelled_splits")
                why = ws.staleness(art)
                if why is None:  # made from an artifact that is itself stale: stale too
                    bad = [k for k in art.provenance.get("inputs", {}) if states.get(k) == "stale"]
                    if bad:
                        why = f"{ws.rel(path)} was made from {bad[0]}, which is stale"
                row.update(
                    state="stale" if why else "ok",
                    created=art.created,
                    summary=run_summary(stage.kind, path, art.summary),
                    inputs={k: v.get("path") for k, v in art.provenance.get("inputs", {}).items() if isinstance(v, dict)},
                )
                if why:
                    row["problem"] = why
        states[stage.kind] = row["state"]
        if row["state"] != "ok" and next_cmd is None and stage.kind not in ("eval", "export"):
            next_cmd = stage
        rows.append(row)
    if next_cmd is None:
        pending = [r for r in rows if r["state"] != "ok"]
        next_cmd = STAGES[pending[0]["kind"]] if pending else None
    command, note = _next_command(ws, next_cmd, splits, states)
    return {"workspace": str(ws.root), "config": ws.rel(ws.config_file) if ws.config_file else None,
            "artifacts": rows, "next": command, "note": note}


def _configured(ws: Workspace, section: str, key: str) -> bool:
    try:
        return key in ws.config_section(section)
    except FerError:
        return False


def _next_command(ws: Workspace, stage: Stage | None, splits: dict[str, int] | None,
                  states: dict[str, str]) -> tuple[str | None, str | None]:
    """The command that makes ``stage``'s artifact, with what the dataset's splits require, and
    ``--overwrite`` where a stale training run is in the way (train refuses to reuse a run whose
    inputs changed)."""
    if stage is None:
        return None, None
    command, note = _next_command_for_data(ws, stage, splits, states)
    if command is not None and stage.kind in ("teacher", "student") and states.get(stage.kind) == "stale":
        command += " --overwrite"
        note = "; ".join(filter(None, [note, f"the {stage.kind} was trained on older inputs: --overwrite trains "
                                              "it again in place"]))
    return command, note


def _next_command_for_data(ws: Workspace, stage: Stage, splits: dict[str, int] | None,
                           states: dict[str, str]) -> tuple[str | None, str | None]:
    if splits is None or states.get("dataset") != "ok" or stage.kind in ("dataset", "export"):
        return stage.command, None
    dataset = ws.rel(ws.current_path("dataset") or "dataset")
    if not any(splits.values()):
        return STAGES["dataset"].command, (
            f"{dataset} has no labelled images (photos without class folders): sort them into class subfolders "
            "(happiness/, sadness/, ...) and rerun `fer align`, or classify them as they are with `fer predict`")
    if stage.kind in ("teacher", "student") and not splits.get("valid"):
        section = "pretrain-teacher" if stage.kind == "teacher" else "train"
        if not _configured(ws, section, "val_fraction"):
            return f"{stage.command} --val-fraction 0.1", (
                f"{dataset} has no labelled valid split: --val-fraction holds out a stratified 10% of train "
                "to pick the best epoch")
    if stage.kind == "eval" and not splits.get("test") and not _configured(ws, "eval", "split"):
        other = "valid" if splits.get("valid") else "train"
        return f"{stage.command} --split {other}", (
            f"{dataset} has no labelled test split: scores on {other} are not a held-out test")
    return stage.command, None
