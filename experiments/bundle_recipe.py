"""Ship the recipe study's best student as fercli's bundled model, with its operating point chosen on the holdout.

1. Candidates: every finished ``lfer`` run of experiments/recipe.py (results/recipe/lfer*.json); the
   one with the best *holdout* accuracy is chosen (FERPlus valid, the report split, plays no part).
2. On the run's own holdout (the stratified 10% of train its training held out), with its best weights:
   * flip TTA becomes the model's recommended default if it raises holdout accuracy;
   * post-hoc logit adjustment (Menon et al. 2021): logits - tau * log(train class frequencies), for
     tau in TAUS; the chosen tau is the one with the best holdout mean per-class accuracy among those
     that keep holdout accuracy within ``MAX_ACC_DROP`` of tau = 0; it is folded into the classifier's
     bias, so every consumer (eval, predict, exports) applies it without knowing;
   * a temperature is fitted (after the adjustment) and stored.
3. ``fer export --format checkpoint --half`` writes the float16 file, copied to fercli/weights/.
4. Scored on FERPlus valid (8 and 7 classes; ECE before and after the temperature), the tau curve on
   valid for the record, and the robustness suite against the previous bundled model on identical
   corrupted inputs.

    python experiments/bundle_recipe.py [--previous fercli/weights/ferplus8_lfer_ldl_fp16.pt]

Writes experiments/results/recipe/bundled.json; docs/MODEL_CARD.md is generated from it by report.py.
"""

from __future__ import annotations

import dataclasses
import shutil
import typing
from pathlib import Path
from typing import Any

import _common as c
import bundle  # the first bundled model, which the robustness comparison is against
import numpy as np
import recipe
import torch

from fercli.calibration import adjustment_curve, fit_temperature, fold_logit_adjustment, split_logits
from fercli.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from fercli.fileio import atomic_path, sha256_file
from fercli.inference import BUNDLED_MODEL
from fercli.progress import no_track
from fercli.robustness import run_robustness
from fercli.training import TrainConfig, prepare_data
from fercli.transforms import preset_from_meta
from fercli.workspace import Workspace

NEW_NAME = "ferplus8_lfer_v2_fp16.pt"
TAUS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
MAX_ACC_DROP = 0.01  # the operating point may cost at most 1 point of holdout accuracy
RECIPE_KEYS = ("arch", "epochs", "batch_size", "lr", "nesterov", "sched", "warmup_epochs", "weight_decay", "augment",
               "ema", "loss", "beta", "targets", "target_mix", "input_size", "seed")


def candidates() -> dict[str, dict[str, Any]]:
    """Finished lfer runs of the recipe study, by name."""
    out = {}
    for p in sorted(recipe.RESULTS.glob("lfer*.json")):
        r = c.read_result(p)
        if r is not None and "train" in r:
            out[p.stem] = r
    return out


def run_config(ckpt: dict[str, Any]) -> TrainConfig:
    """The TrainConfig a checkpoint was trained with (as recorded in it)."""
    hints = typing.get_type_hints(TrainConfig)
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        if f.name in ckpt["config"]:
            v = ckpt["config"][f.name]
            kw[f.name] = Path(v) if v is not None and hints[f.name] in (Path, Path | None) else v
    return dataclasses.replace(TrainConfig(**kw), workers=0, resume=False, overwrite=False)


@torch.no_grad()
def holdout_logits(model: torch.nn.Module, split: Any, pre: Any) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the plain and the mirrored images of ``split``."""
    plain = split_logits(model, split, pre, "cpu")
    flipped = split_logits(lambda x: model(x.flip(-1)), split, pre, "cpu")
    return plain, flipped


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def choose_operating_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The tau with the best mean per-class accuracy among those within MAX_ACC_DROP of tau = 0's accuracy."""
    base = next(p for p in curve if p["tau"] == 0.0)["accuracy"]
    ok = [p for p in curve if p["accuracy"] >= base - MAX_ACC_DROP]
    return max(ok, key=lambda p: (p["mean_class_accuracy"], -p["tau"]))


def build(name: str, run: dict[str, Any], previous: Path, dest: Path, robustness: bool = True) -> dict[str, Any]:
    source = c.WS / "runs" / recipe.EXP / name / "best.pt"
    ckpt = load_checkpoint(source)
    model, _ = model_from_checkpoint(ckpt)
    ws = Workspace(c.WS)
    data = prepare_data(run_config(ckpt), ws)
    pre = preset_from_meta(ckpt)
    y = data.valid.labels.numpy()
    plain, flipped = holdout_logits(model, data.valid, pre)
    acc_plain = float((plain.argmax(1) == y).mean())
    acc_flip = float(((_softmax(plain) + _softmax(flipped)) / 2).argmax(1).__eq__(y).mean())
    tta = "flip" if acc_flip > acc_plain else "none"
    # the curve on what inference will see: the (flip-averaged) probabilities, as log-probabilities
    seen = np.log((_softmax(plain) + _softmax(flipped)) / 2) if tta == "flip" else plain
    prior = np.bincount(data.train.labels.numpy(), minlength=len(data.classes)).astype(np.float64)
    curve = adjustment_curve(seen, y, prior, TAUS)
    point = choose_operating_point(curve)
    shift = -point["tau"] * np.log(prior / prior.sum())
    layer = fold_logit_adjustment(model, shift)
    # the adjusted model's logits, without running it again; the temperature fits what inference computes
    temperature = fit_temperature(plain + shift, y, [flipped + shift] if tta == "flip" else None)
    ckpt = {**ckpt, "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "temperature": temperature, "tta": tta,
            "logit_adjustment": {"tau": point["tau"], "prior": (prior / prior.sum()).tolist(), "folded_into": layer,
                                 "rule": f"best holdout mean per-class accuracy within {MAX_ACC_DROP:.0%} of tau=0's "
                                         "holdout accuracy"}}
    work = c.WS / "bundle" / "recipe"
    work.mkdir(parents=True, exist_ok=True)
    adjusted = work / "adjusted.pt"
    save_checkpoint(adjusted, ckpt)
    out = work / NEW_NAME
    logfile = c.WS / "logs" / "bundle_recipe.log"
    export = c.fer("export", adjusted, "--format", "checkpoint", "--half", "--out", out, "--json", logfile=logfile)
    with atomic_path(dest) as tmp:
        shutil.copyfile(out, tmp)
    scores = c.evaluate(dest, work, logfile)
    # the tau curve on valid, for the record (the choice above used the holdout only)
    valid = c.fer("eval", c.MANIFEST8, "--model", source, "--split", "test", "--tta", tta, "--out", work / "source8",
                  "--json", logfile=logfile)
    robust: dict[str, Any] = {}
    for label, model_path in (("new", dest), ("previous", previous)):
        robust[label] = run_robustness(model_path, c.MANIFEST8, "test", out=work / f"robustness-{label}", ws=ws,
                                       track=no_track) if robustness else None
    return {
        "file": dest.relative_to(c.ROOT).as_posix() if dest.is_relative_to(c.ROOT) else str(dest), "bytes": dest.stat().st_size, "sha256": sha256_file(dest),
        "source_run": f"{recipe.EXP}/{name}", "source_command": run["command"], "hardware": run.get("hardware"),
        "recipe": {k: ckpt["config"].get(k) for k in RECIPE_KEYS},
        "best_epoch": run["train"]["best_epoch"], "epochs": run["train"]["epochs_run"],
        "candidates_holdout": {k: r["train"]["best_val_acc"] for k, r in candidates().items()},
        "holdout": {"images": len(y), "accuracy": acc_plain, "accuracy_flip_tta": acc_flip, "tta": tta,
                    "tau_curve": curve, "tau": point["tau"], "rule": ckpt["logit_adjustment"]["rule"],
                    "temperature": temperature},
        "source_ferplus_valid_8": {"accuracy": valid["accuracy"], "mean_class_accuracy": valid["mean_class_accuracy"],
                                   "tta": tta},
        "export": {k: export.get(k) for k in ("format", "max_abs_diff", "parity")},
        "commands": [f"python experiments/bundle_recipe.py  # from {recipe.EXP}/{name}",
                     f"fer export bundle/recipe/adjusted.pt --format checkpoint --half --out bundle/recipe/{NEW_NAME}",
                     "fer eval data/ferplus8.parquet --model fercli/weights/" + NEW_NAME + " --split test"],
        "robustness": {k: {"clean": v["clean"], "corruptions": {n: {kk: vv for kk, vv in e.items()
                                                                   if kk in ("accuracy", "mean_class_accuracy", "drop")}
                                                               for n, e in v["corruptions"].items()},
                           "summary": v["summary"], "model": v["model"]} for k, v in robust.items() if v},
        "previous": {"file": previous.name, "sha256": sha256_file(previous)},
        **scores,
    }


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--previous", type=Path, default=bundle.FIRST_MODEL, help="the model to compare robustness with")
    p.add_argument("--run", help="bundle this run instead of the best holdout candidate")
    p.add_argument("--dest", type=Path, default=BUNDLED_MODEL.parent / NEW_NAME, help="where the bundled file goes")
    p.add_argument("--no-robustness", action="store_true", help="skip the robustness comparison (smoke tests)")
    opts = p.parse_args()
    c.setup_logging()
    runs = candidates()
    if not runs:
        raise SystemExit(f"no finished lfer runs in {recipe.RESULTS}: run experiments/recipe.py first")
    name = opts.run or max(runs, key=lambda k: runs[k]["train"]["best_val_acc"])
    result = build(name, runs[name], opts.previous.resolve(), opts.dest.resolve(), not opts.no_robustness)
    c.write_result(recipe.RESULTS / "bundled.json", result)
    c.log.info("bundled %s from %s: FERPlus valid %.4f (8), mean per-class %.4f; %.2f MB", result["file"], name,
               result["ferplus_valid_8"]["accuracy"], result["ferplus_valid_8"]["mean_class_accuracy"],
               result["bytes"] / 1e6)


if __name__ == "__main__":
    main()
