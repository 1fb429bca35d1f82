"""Budget: how far is the protocol's 20-epoch budget from convergence?

The full LDL student and the ShuffleNetV2 baseline trained 3x longer (60 epochs, lr x0.1 after
epochs 24 and 48), seed 0, everything else as in experiments/protocol.toml. Set against the
ablation's 20-epoch runs, this is the learning curve behind "what budget would reach 84%".

    python experiments/budget.py [--jobs 2] [--epochs 60]

Results: experiments/results/budget/<variant>-e<epochs>.json.
"""

from __future__ import annotations

import _common as c
from ablation import VARIANTS

SEED = 0
VARIANTS_RUN = ("lfer_ldl", "shufflenet_v2")


def tasks(epochs: int = 60) -> list[c.Task]:
    step = round(epochs * 0.4)  # the protocol's 8 of 20, scaled
    out = []
    for v in VARIANTS_RUN:
        name = f"{v}-e{epochs}"
        args = [*VARIANTS[v], "--epochs", epochs, "--lr-step", step]
        out.append(c.Task(f"budget {name}", lambda n=name, a=args: c.train_run("budget", n, SEED, a),
                          ("teacher",) if v == "lfer_ldl" else ()))
    return out


def main() -> None:
    args = c.parser(__doc__)
    args.add_argument("--epochs", type=int, default=60, help="epochs of the long runs (default 60)")
    opts = args.parse_args()
    c.setup_logging()
    c.ensure_dataset()
    done = c.run_tasks([c.teacher_task(), *tasks(opts.epochs)], opts.jobs)
    for name, r in done.items():
        if name != "teacher":
            c.log.info("%s: FERPlus valid %.4f (8) %.4f (7)", r["run"], r["ferplus_valid_8"]["accuracy"],
                       r["ferplus_valid_7"]["accuracy"])


if __name__ == "__main__":
    main()
