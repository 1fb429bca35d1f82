"""The whole FERPlus study in one queue, in priority order, on ``--jobs`` CPU threads:

ablation (teacher first) -> distribution quality -> beta sweep -> budget runs, and bundling once
every LDL candidate (ablation seeds, budget runs) is done. Everything already done is skipped and
anything interrupted resumes, so run it again after a cut; then `python experiments/report.py`.

    python experiments/all.py [--jobs 2] [--seeds 3] [--other-seeds 2] [--betas 0,0.2,0.4,0.6,0.8,1] [--budget-epochs 40,60]
"""

from __future__ import annotations

import _common as c
import ablation
import beta_sweep
import budget
import bundle
import dist_quality


def main() -> None:
    args = c.parser(__doc__)
    args.add_argument("--seeds", type=int, default=3, help="ablation seeds for the baseline and LDL (default 3)")
    args.add_argument("--other-seeds", type=int, default=ablation.DEFAULT_OTHER_SEEDS,
                      help="ablation seeds for the other variants (default %(default)s)")
    args.add_argument("--betas", default=beta_sweep.DEFAULT_BETAS, help="beta grid (default %(default)s)")
    args.add_argument("--budget-epochs", default=budget.DEFAULT_EPOCHS,
                      help="comma-separated epochs of the budget runs (default %(default)s)")
    opts = args.parse_args()
    c.setup_logging()
    c.ensure_dataset()
    abl = ablation.tasks(opts.seeds, opts.other_seeds)
    long_runs = budget.tasks(budget.parse_epochs(opts.budget_epochs))
    ldl = [t.name for t in [*abl, *long_runs] if "lfer_ldl-" in t.name]
    queue = [*abl, dist_quality.task(), *beta_sweep.tasks(beta_sweep.parse_betas(opts.betas)), *long_runs,
             bundle.task(ldl)]
    c.run_tasks(queue, opts.jobs)
    c.log.info("done; now: python experiments/report.py")


if __name__ == "__main__":
    main()
