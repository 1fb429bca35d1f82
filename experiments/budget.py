"""Budget: how far is the protocol's 20-epoch budget from convergence?

The full LDL student and the ShuffleNetV2 baseline trained 2x and 3x longer (40 and 60 epochs, the
protocol's lr schedule stretched: x0.1 after 40% and 80% of the epochs), seed 0, everything else as in
experiments/protocol.toml. With the ablation's 20-epoch runs (seed 0) this gives final accuracy against
budget, the learning curve behind "what budget would reach 84%" (report.py fits and extrapolates it).

    python experiments/budget.py [--jobs 2] [--epochs 40,60]

Results: experiments/results/budget/<variant>-e<epochs>.json.
"""

from __future__ import annotations

import _common as c
from ablation import VARIANTS

SEED = 0
VARIANTS_RUN = ("lfer_ldl", "shufflenet_v2")


DEFAULT_EPOCHS = "40,60"


def parse_epochs(spec: str) -> list[int]:
    return [int(e) for e in spec.split(",")]


def tasks(epochs: list[int]) -> list[c.Task]:
    """The long runs, longest last: a cut session leaves complete points on the curve, not half of each."""
    out = []
    for e in sorted(epochs):
        step = round(e * 0.4)  # the protocol's 8 of 20, scaled
        for v in VARIANTS_RUN:
            name = f"{v}-e{e}"
            args = [*VARIANTS[v], "--epochs", e, "--lr-step", step]
            out.append(c.Task(f"budget {name}", lambda n=name, a=args: c.train_run("budget", n, SEED, a),
                              ("teacher",) if v == "lfer_ldl" else ()))
    return out


def main() -> None:
    args = c.parser(__doc__)
    args.add_argument("--epochs", default=DEFAULT_EPOCHS,
                      help=f"comma-separated epochs of the long runs (default {DEFAULT_EPOCHS})")
    opts = args.parse_args()
    c.setup_logging()
    c.ensure_dataset()
    done = c.run_tasks([c.teacher_task(), *tasks(parse_epochs(opts.epochs))], opts.jobs)
    for name, r in done.items():
        if name != "teacher":
            c.log.info("%s: FERPlus valid %.4f (8) %.4f (7)", r["run"], r["ferplus_valid_8"]["accuracy"],
                       r["ferplus_valid_7"]["accuracy"])


if __name__ == "__main__":
    main()
