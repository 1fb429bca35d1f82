"""Is the rare-class bottleneck in the classifier or in the features? Decoupled head re-training on frozen features.

Kang et al. 2020 ("Decoupling representation and classifier for long-tailed recognition") found that
features learned on natural draws are good enough, and that re-training only the classifier with
class-balanced sampling (cRT) fixes the rare classes. This script asks the same of a recipe run: it freezes
the backbone of ``--run`` (default the study's most accurate run), pools its Conv5 features once (plain and
mirrored) over train, the holdout and FERPlus valid, and re-trains the output module on them under each
``VARIANTS`` entry: which part (the last 1x1 classifier, or the whole Mish head from its trained weights),
which targets (the run's own soft targets, or the one-hot labels), and which draws (natural, square-root or
class-balanced; mirrored features double as augmentation). Each re-trained head then gets bundle_recipe's
operating-point search on the holdout (TTA x tau, the rare-class FLOORS) and is scored on FERPlus valid at the
point chosen there. If no head reaches the floors at a holdout accuracy near the shipped model's, the features
are what lacks the rare classes, and only training the backbone (a re-balancing fine-tune) can add them.

    python experiments/head_retrain.py [--run lfer_ens96_128_rebal_ens]

Writes experiments/results/recipe/head_retrain.json; seeded (seed 0), one CPU thread, a few minutes.
"""

from __future__ import annotations

import copy
from typing import Any

import _common as c
import bundle_recipe as br
import numpy as np
import recipe
import torch

from fercli.calibration import adjustment_curve, split_logits
from fercli.checkpoint import load_checkpoint, model_from_checkpoint
from fercli.data import cache_dir_for, make_split
from fercli.fileio import sha256_file
from fercli.schema.columns import COL_LABEL, COL_PATH
from fercli.schema.manifest import read_manifest
from fercli.training import prepare_data
from fercli.transforms import preset_from_meta
from fercli.workspace import Workspace

DEFAULT_RUN = "lfer_ens96_128_rebal_ens"
# (part, targets, sampling power): power 0 natural draws, 0.5 square-root, 1 class-balanced
VARIANTS = (("classifier", "soft", 1.0), ("head", "soft", 1.0), ("classifier", "hard", 1.0), ("head", "hard", 1.0),
            ("head", "hard", 0.5), ("head", "hard", 0.0))
EPOCHS, LR, BATCH, SEED = 5, 0.01, 256, 0


@torch.no_grad()
def pooled_features(model: torch.nn.Module, split: Any, pre: Any) -> tuple[np.ndarray, np.ndarray]:
    """The head's input, globally average-pooled (N, C), for the plain and the mirrored images of ``split``."""
    got: list[torch.Tensor] = []

    def body(x: torch.Tensor) -> torch.Tensor:
        model(x)
        return got.pop()

    # one hook for every batch of both passes: it keeps the head's pooled input, the model's output is dropped
    hook = model.head.register_forward_pre_hook(lambda _m, args: got.append(args[0].mean((2, 3))))
    try:
        return (split_logits(body, split, pre, "cpu").astype(np.float32),
                split_logits(lambda x: body(x.flip(-1)), split, pre, "cpu").astype(np.float32))
    finally:
        hook.remove()


def retrain(head: torch.nn.Module, feats: np.ndarray, targets: np.ndarray, labels: np.ndarray, part: str,
            power: float) -> torch.nn.Module:
    """A copy of ``head`` re-trained on pooled ``feats`` (cross-entropy to ``targets``), draws weighted by
    count(class) ** -power; only the last classifier when ``part`` is classifier (the rest stays in eval mode)."""
    torch.manual_seed(SEED)
    head = copy.deepcopy(head)
    x, t, y = torch.from_numpy(feats), torch.from_numpy(targets).float(), torch.from_numpy(labels).long()
    weights = (1.0 / torch.bincount(y).float().clamp_min(1).pow(power))[y]
    params = list(head.classifier.parameters() if part == "classifier" else head.parameters())
    opt = torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)
    steps = EPOCHS * len(x) // BATCH
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    head.train(part == "head")
    for _ in range(steps):
        idx = torch.multinomial(weights, BATCH, replacement=True)
        loss = -(t[idx] * torch.log_softmax(head(x[idx, :, None, None]), 1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return head.eval()


@torch.no_grad()
def head_logits(head: torch.nn.Module, feats: np.ndarray) -> np.ndarray:
    return head(torch.from_numpy(feats)[:, :, None, None]).double().numpy()


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--run", default=DEFAULT_RUN, help=f"the recipe run whose features are frozen (default {DEFAULT_RUN})")
    opts = p.parse_args()
    torch.set_num_threads(1)
    c.setup_logging()
    source = c.WS / "runs" / recipe.EXP / opts.run / "best.pt"
    if not source.is_file():
        raise SystemExit(f"{source}: not found; run experiments/recipe.py (the run {opts.run}) first")
    ckpt = load_checkpoint(source)
    model = model_from_checkpoint(ckpt)[0].float().eval()
    ws = Workspace(c.WS)
    data = prepare_data(br.run_config(ckpt), ws)
    pre = preset_from_meta(ckpt)
    m = read_manifest(c.MANIFEST8)
    rows = m.labelled(["test"])
    valid = make_split(m.root, rows[COL_PATH].tolist(), rows[COL_LABEL].to_numpy(), None, pre.input_size,
                       cache_dir_for(ws.root), ws.sha256(m.path), 0)
    feats = {k: pooled_features(model, s, pre) for k, s in (("train", data.train), ("holdout", data.valid),
                                                             ("valid", valid))}
    c.log.info("pooled features: %s", {k: v[0].shape for k, v in feats.items()})
    y_train, y_hold, y_valid = data.train.labels.numpy(), data.valid.labels.numpy(), valid.labels.numpy()
    prior = np.bincount(y_train, minlength=len(data.classes)).astype(np.float64)
    x_train = np.concatenate(feats["train"])  # the mirrored features double as augmentation
    hard = np.eye(len(data.classes), dtype=np.float32)[y_train]
    soft = data.train.targets.numpy() if data.train.targets is not None else hard

    def scored(head: torch.nn.Module) -> dict[str, Any]:
        hold = [head_logits(head, f) for f in feats["holdout"]]
        val = [head_logits(head, f) for f in feats["valid"]]
        grid = [{"alpha": 1.0, "tta": tta, "curve": adjustment_curve(hold[0], y_hold, prior, br.TAUS,
                                                                     hold[1:] if tta == "flip" else [])}
                for tta in br.TTAS]
        g, point, rule = br.choose_point(grid)
        at = adjustment_curve(val[0], y_valid, prior, [point["tau"]], val[1:] if g["tta"] == "flip" else [])[0]
        raw = adjustment_curve(val[0], y_valid, prior, [0.0])[0]
        keys = ("accuracy", "mean_class_accuracy", "min_recall")
        return {"tta": g["tta"], "tau": point["tau"], "rule": rule,
                "meets_floors": all(point[k] >= v for k, v in br.FLOORS.items()),
                "holdout": {k: point[k] for k in keys}, "ferplus_valid_8": {**{k: at[k] for k in keys},
                                                                           "recall": at["recall"]},
                "ferplus_valid_8_raw": {k: raw[k] for k in keys}}

    rows_out = [{"part": "none (the run as trained)", "targets": None, "power": None, **scored(model.head)}]
    for part, targets, power in VARIANTS:
        head = retrain(model.head, x_train, np.concatenate([soft if targets == "soft" else hard] * 2),
                       np.concatenate([y_train, y_train]), part, power)
        rows_out.append({"part": part, "targets": targets, "power": power, **scored(head)})
        r = rows_out[-1]
        c.log.info("%s, %s targets, power %.1f: holdout %.4f at the floors (%s, tau %.3f) -> valid %.4f, min %.3f",
                   part, targets, power, r["holdout"]["accuracy"], r["tta"], r["tau"],
                   r["ferplus_valid_8"]["accuracy"], r["ferplus_valid_8"]["min_recall"])
    c.write_result(recipe.RESULTS / "head_retrain.json", {
        "run": f"{recipe.EXP}/{opts.run}", "checkpoint_sha256": sha256_file(source), "classes": list(data.classes),
        "epochs": EPOCHS, "lr": LR, "batch_size": BATCH, "seed": SEED, "floors": br.FLOORS,
        "command": f"python experiments/head_retrain.py --run {opts.run}", "variants": rows_out})


if __name__ == "__main__":
    main()
