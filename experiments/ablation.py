"""Ablation (the paper's Table 4) on FERPlus: each change of LFER-LDL added one at a time.

    shufflenet_v2 -> lfer_head -> lfer -> lfer + teacher distributions (LDL) -> lfer + crowd votes

Same protocol (experiments/protocol.toml), budget and seeds for all; the combo loss (eq. 6, beta
0.2) on the single labels everywhere, plus KL (eq. 5) to the target distributions in the last two.
Seeds 0-2 for the baseline and the full LDL student, fewer for the others (budget): seeds 0-1 in the
committed results (``--other-seeds 2``).

    python experiments/ablation.py [--jobs 2] [--seeds 3] [--other-seeds 2]

Results: experiments/results/ablation/<variant>-s<seed>.json, summary in ablation.json.
"""

from __future__ import annotations

import _common as c

# name -> fer train options; the order is the paper's
VARIANTS: dict[str, list[str]] = {
    "shufflenet_v2": ["--arch", "shufflenet_v2", "--targets", "none"],
    "lfer_head": ["--arch", "lfer_head", "--targets", "none"],
    "lfer": ["--arch", "lfer", "--targets", "none"],
    "lfer_ldl": ["--arch", "lfer", "--targets", "teacher", "--labels", c.LABELS],
    "lfer_votes": ["--arch", "lfer", "--targets", "votes"],
}
MULTI_SEED = ("shufflenet_v2", "lfer_ldl")


DEFAULT_OTHER_SEEDS = 2


def runs(seeds: int, other_seeds: int = DEFAULT_OTHER_SEEDS) -> list[tuple[str, int]]:
    """(variant, seed) in queue order: seed 0 of every variant first, so a cut study has the whole table."""
    def n(v: str) -> int:
        return seeds if v in MULTI_SEED else other_seeds

    return [(v, s) for s in range(max(seeds, other_seeds)) for v in VARIANTS if s < n(v)]


def summarize(results: dict[str, dict]) -> dict:
    rows = []
    for variant in VARIANTS:
        rs = [r for k, r in sorted(results.items()) if r["run"].rsplit("-s", 1)[0] == variant]
        if not rs:
            continue
        row = {"variant": variant, "seeds": [r["seed"] for r in rs]}
        for key, get in (("valid8", lambda r: r["ferplus_valid_8"]["accuracy"]),
                         ("valid7", lambda r: r["ferplus_valid_7"]["accuracy"]),
                         ("valid8_mean_class", lambda r: r["ferplus_valid_8"]["mean_class_accuracy"]),
                         ("holdout", lambda r: r["train"]["best_val_acc"])):
            vals = [get(r) for r in rs]
            m, sd = c.mean_std(vals)
            row[key] = {"values": vals, "mean": m, "std": sd}
        row["train_hours"] = sum(r["train_seconds"] for r in rs) / 3600
        rows.append(row)
    return {"experiment": "ablation", "protocol": "experiments/protocol.toml", "rows": rows}


def tasks(seeds: int = 3, other_seeds: int = DEFAULT_OTHER_SEEDS) -> list[c.Task]:
    """The teacher (LDL waits on it), then one run of each variant, then the extra seeds."""
    out = [c.teacher_task()]
    for variant, seed in runs(seeds, other_seeds):
        name = f"{variant}-s{seed}"
        needs = ("teacher",) if variant == "lfer_ldl" else ()
        out.append(c.Task(name, lambda v=variant, n=name, s=seed: c.train_run("ablation", n, s, VARIANTS[v]), needs))
    return out


def main() -> None:
    args = c.parser(__doc__)
    args.add_argument("--seeds", type=int, default=3, help="seeds for shufflenet_v2 and lfer_ldl (default 3)")
    args.add_argument("--other-seeds", type=int, default=DEFAULT_OTHER_SEEDS,
                      help=f"seeds for the other variants (default {DEFAULT_OTHER_SEEDS})")
    opts = args.parse_args()
    c.setup_logging()
    c.ensure_dataset()
    done = c.run_tasks(tasks(opts.seeds, opts.other_seeds), opts.jobs)
    results = {k: v for k, v in done.items() if k != "teacher"}
    summary = summarize(results)
    c.write_result(c.RESULTS / "ablation.json", summary)
    for row in summary["rows"]:
        c.log.info("%-14s n=%d  valid8 %.4f +- %.4f  valid7 %.4f +- %.4f", row["variant"], len(row["seeds"]),
                   row["valid8"]["mean"], row["valid8"]["std"], row["valid7"]["mean"], row["valid7"]["std"])


if __name__ == "__main__":
    main()
