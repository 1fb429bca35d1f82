"""``fer data info``: what a manifest holds, per split and class, and what is wrong with it."""

from __future__ import annotations

from typing import Any

import numpy as np

from fercli.importers._common import DirIndex
from fercli.progress import Track, no_track
from fercli.schema import COL_LABEL, COL_PATH, COL_SPLIT, SPLITS, Manifest


def manifest_info(m: Manifest, check_files: bool = True, track: Track = no_track) -> dict[str, Any]:
    """Counts per split and class, imbalance, unlabelled and missing rows, optional columns."""
    df = m.df
    splits = [s for s in SPLITS if (df[COL_SPLIT] == s).any()]
    counts: dict[str, dict[str, int]] = {}
    for s in splits:
        labels = df.loc[df[COL_SPLIT] == s, COL_LABEL].to_numpy()
        counts[s] = {c: int((labels == i).sum()) for i, c in enumerate(m.classes)}
    per_split = {}
    for s in splits:
        sub = df[df[COL_SPLIT] == s]
        labelled = [n for n in counts[s].values() if n > 0]
        per_split[s] = {
            "rows": int(len(sub)),
            "labelled": int((sub[COL_LABEL] >= 0).sum()),
            "unlabelled": int((sub[COL_LABEL] < 0).sum()),
            # largest / smallest non-empty class; None when fewer than two classes are present
            "imbalance": round(max(labelled) / min(labelled), 2) if len(labelled) > 1 else None,
            "empty_classes": [c for c, n in counts[s].items() if n == 0],
        }
    missing = None
    missing_examples: list[str] = []
    # After `fer align`, rows whose status is not "ok" record images that gave no crop: no file by design.
    has_status = "status" in df.columns
    with_file = df[df["status"] == "ok"] if has_status else df
    if check_files:
        index = DirIndex(m.root)
        paths = with_file[COL_PATH]
        absent = np.array([not index.exists(p) for p in track(paths, "checking image files", len(paths))], dtype=bool)
        missing = int(absent.sum())
        missing_examples = [str(p) for p in paths[absent].head(3)]
    optional = [c for c in ("box_x", "lm0_x", "valence", "src_path", "score") if c in df.columns]
    return {
        "manifest": str(m.path) if m.path else None,
        "root": str(m.root),
        "root_exists": m.root.is_dir(),
        "dataset": m.meta.get("dataset"),
        "schema_version": m.meta.get("schema_version"),
        "classes": list(m.classes),
        "rows": int(len(df)),
        "counts": counts,
        "splits": per_split,
        "unlabelled": int((df[COL_LABEL] < 0).sum()),
        "missing_files": missing,
        "missing_examples": missing_examples,
        "distributions": m.has_dist,
        "distribution_rows": int(df[m.dist_columns].notna().all(axis=1).sum()) if m.has_dist else 0,
        "vote_columns": [c.removeprefix("votes_") for c in m.vote_columns],
        "optional_columns": {"box": "box_x" in optional, "landmarks": "lm0_x" in optional,
                             "valence_arousal": "valence" in optional, "alignment": "score" in optional},
        "status": {str(k): int(v) for k, v in df["status"].value_counts().items()} if has_status else None,
        "created": (m.meta.get("provenance") or {}).get("created"),
    }
