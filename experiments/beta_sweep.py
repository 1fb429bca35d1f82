"""beta sweep (the paper's Figs. 6-7) on FERPlus: the full LDL student (lfer + teacher
distributions) with the combo loss's beta varied, everything else as in experiments/protocol.toml.

The paper sweeps 0 to 1 in steps of 0.1; on 2 CPU cores the default grid is 0, 0.2, ..., 1.0 with
one seed (--betas changes it). beta 0.2 is the ablation's lfer_ldl-s0 run, reused, not repeated.

    python experiments/beta_sweep.py [--jobs 2] [--betas 0,0.2,0.4,0.6,0.8,1]

Results: experiments/results/beta/beta-<b>.json, summary in beta_sweep.json (report.py plots it).
"""

from __future__ import annotations

import _common as c
from ablation import VARIANTS

DEFAULT_BETAS = "0,0.2,0.4,0.6,0.8,1"
SEED = 0


def run_beta(beta: float) -> dict:
    if beta == 0.2:  # the protocol's own beta: this is exactly the ablation's run
        return c.train_run("ablation", f"lfer_ldl-s{SEED}", SEED, VARIANTS["lfer_ldl"])
    return c.train_run("beta", f"beta-{beta:.1f}", SEED, [*VARIANTS["lfer_ldl"], "--beta", beta])


def parse_betas(spec: str) -> list[float]:
    return [round(float(b), 2) for b in spec.split(",")]


def tasks(betas: list[float]) -> list[c.Task]:
    return [c.Task(f"beta={b}", lambda b=b: run_beta(b), ("teacher",)) for b in betas]


def main() -> None:
    args = c.parser(__doc__)
    args.add_argument("--betas", default=DEFAULT_BETAS, help=f"comma-separated grid (default {DEFAULT_BETAS})")
    opts = args.parse_args()
    betas = parse_betas(opts.betas)
    c.setup_logging()
    c.ensure_dataset()
    done = c.run_tasks([c.teacher_task(), *tasks(betas)], opts.jobs)
    rows = [{"beta": b, "run": done[f"beta={b}"]["run"],
             "valid8": done[f"beta={b}"]["ferplus_valid_8"]["accuracy"],
             "valid7": done[f"beta={b}"]["ferplus_valid_7"]["accuracy"],
             "mean_class8": done[f"beta={b}"]["ferplus_valid_8"]["mean_class_accuracy"],
             "holdout": done[f"beta={b}"]["train"]["best_val_acc"]}
            for b in betas if f"beta={b}" in done]
    c.write_result(c.RESULTS / "beta_sweep.json", {"experiment": "beta_sweep", "seed": SEED, "rows": rows})
    for r in rows:
        c.log.info("beta %.1f: valid8 %.4f valid7 %.4f", r["beta"], r["valid8"], r["valid7"])


if __name__ == "__main__":
    main()
