"""Label-distribution quality on FERPlus: how close are the teacher's distributions to the ten human
votes per image, compared with what a student gets without a teacher?

For the training images (the labelled train split, as `fer gen-labels` labels it) it reports the
mean KL(votes || q) and the top-1 agreement of q with the vote majority, for q =

* the teacher's distributions (T = 1, the paper's; and T = 2, softened), split into the images the
  teacher trained on and the 10% it held out for model selection (it never fitted those);
* one-hot majority labels (what the ablation's non-LDL variants learn from);
* uniformly smoothed labels ``(1 - eps) one-hot + eps / C``: eps = 0.1, and the eps that minimises the
  KL (an oracle: it is chosen with the votes).

    python experiments/dist_quality.py

Result: experiments/results/dist_quality.json. Needs the teacher (it trains it if missing).
"""

from __future__ import annotations

import _common as c
import numpy as np

from fercli.data import stratified_holdout
from fercli.schema import COL_LABEL, COL_PATH, COL_SPLIT, read_labels, read_manifest

LABELS_T2 = c.WS / "labels" / "teacher-resnet18-T2.parquet"
EPS = 1e-12


def kl_rows(votes: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row KL(votes || q); infinite where q is 0 but a vote is not."""
    with np.errstate(divide="ignore", invalid="ignore"):  # 0 x log 0 terms are masked out below
        terms = np.where(votes > 0, votes * (np.log(np.maximum(votes, EPS)) - np.log(q)), 0.0)
    return terms.sum(1)


def stats(votes: np.ndarray, q: np.ndarray) -> dict:
    kl = kl_rows(votes, q)
    finite = np.isfinite(kl)
    ent = -(np.where(q > 0, q * np.log(np.maximum(q, EPS)), 0.0)).sum(1)
    return {"images": len(q), "mean_kl": float(kl.mean()) if finite.all() else float("inf"),
            "infinite_kl_fraction": float(1 - finite.mean()),
            "mean_kl_finite_rows": float(kl[finite].mean()) if finite.any() else None,
            "top1_agreement": float((q.argmax(1) == votes.argmax(1)).mean()),
            "mean_entropy": float(ent.mean()), "mean_max_prob": float(q.max(1).mean())}


def run() -> dict:
    """Compute and write results/dist_quality.json (labels at T = 2 are generated once)."""
    teacher = c.teacher()
    with c.exclusive("labels-T2"):
        if not LABELS_T2.is_file():
            c.fer("gen-labels", c.MANIFEST8, "--teacher", c.TEACHER_DIR / "best.pt", "-T", 2, "--out", LABELS_T2,
                  "--json", logfile=c.WS / "logs" / "teacher.log")
    m = read_manifest(c.MANIFEST8)
    train = m.labelled(["train"])
    votes = train[m.dist_columns].to_numpy(np.float64)
    labels = train[COL_LABEL].to_numpy()
    ncls = len(m.classes)
    # The teacher's own model-selection holdout: the same call `fer pretrain-teacher` made (seed 0).
    seed = teacher["command"].split("--seed ")[1].split()[0]
    held = stratified_holdout(labels, 0.1, int(seed))

    def teacher_q(path):
        df, meta = read_labels(path)
        df = df[df[COL_SPLIT] == "train"].set_index(COL_PATH).loc[train[COL_PATH]]
        return df[[f"dist_{k}" for k in m.classes]].to_numpy(np.float64), meta

    rows = {}
    for name, path in (("teacher T=1", c.LABELS), ("teacher T=2", LABELS_T2)):
        q, meta = teacher_q(path)
        q = q / q.sum(1, keepdims=True)
        rows[name] = {**stats(votes, q), "fitted_images": stats(votes[~held], q[~held]),
                      "held_out_images": stats(votes[held], q[held]), "labels_file": str(path.relative_to(c.WS)),
                      "temperature": meta.get("temperature")}
    onehot = np.eye(ncls)[labels]
    rows["one-hot"] = stats(votes, onehot)
    grid = np.round(np.arange(0.05, 0.951, 0.05), 2)
    kls = [float(kl_rows(votes, (1 - e) * onehot + e / ncls).mean()) for e in grid]
    best = float(grid[int(np.argmin(kls))])
    for e, label in ((0.1, "smoothed eps=0.1"), (best, f"smoothed eps={best} (oracle)")):
        rows[label] = {**stats(votes, (1 - e) * onehot + e / ncls), "eps": e}
    rows["votes (reference)"] = stats(votes, votes)
    result = {"experiment": "dist_quality", "images": len(train), "held_out_by_teacher": int(held.sum()),
              "teacher": teacher["run"], "smoothing_grid": {"eps": grid.tolist(), "mean_kl": kls}, "rows": rows}
    c.write_result(c.RESULTS / "dist_quality.json", result)
    for name, r in rows.items():
        c.log.info("%-28s KL %.4f  top-1 %.4f  entropy %.3f", name, r["mean_kl"], r["top1_agreement"], r["mean_entropy"])
    return result


def task() -> c.Task:
    return c.Task("dist_quality", run, ("teacher",))


def main() -> None:
    c.parser(__doc__).parse_args()
    c.setup_logging()
    c.ensure_dataset()
    run()


if __name__ == "__main__":
    main()
