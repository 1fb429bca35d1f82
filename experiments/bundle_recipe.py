"""Ship the recipe study's best student as fercli's bundled model, with its operating point chosen on the holdout.

1. Candidates: every finished ``lfer`` run of experiments/recipe.py (results/recipe/lfer*.json). The
   fine-tunes of another run (recipe.FINETUNES, e.g. the rare-class re-balancing ``lfer_mix_bal``) are
   preferred when any has finished: each gets the search below, and at its chosen point the robustness
   suite is run on the holdout. Runs are ranked there (``rank_key``): the rare-class FLOORS first, then
   the robustness target (suite mean >= ROBUST_FLOOR), then clean accuracy. The best is shipped only if it
   ranks above the current bundled model on the same corrupted holdout images; either way the decision
   goes to results/recipe/bundle_search.json. Without a fine-tune, the run with the best *holdout*
   accuracy (FERPlus valid, the report split, plays no part).
2. On the run's own holdout (the stratified 10% of train its training held out), with its best weights:
   * for a fine-tune, the weights are interpolated with its base run's, w = (1 - alpha) * base +
     alpha * fine-tuned for alpha in ALPHAS (WiSE-FT, Wortsman et al. 2022: one model, no extra cost at
     inference; alpha = 0 is the base run itself);
   * TTA (none or flip) is part of the operating point below, searched with alpha and tau;
   * post-hoc logit adjustment (Menon et al. 2021): logits - tau * log(train class frequencies), for
     tau in TAUS;
   * the operating point (alpha, TTA, tau): the best holdout accuracy among the points that reach issue 13's
     rare-class targets on the holdout (``FLOORS``: mean per-class accuracy and lowest recall); when no
     point does, the best holdout mean per-class accuracy within ``MAX_ACC_DROP`` of tau = 0's accuracy
     (alpha = 1). tau is folded into the classifier's bias, so every consumer (eval, predict, exports)
     applies it without knowing;
   * a temperature is fitted (after the adjustment) and stored.
3. ``fer export --format checkpoint --half`` writes the float16 file, copied to fercli/weights/.
4. Scored on FERPlus valid (8 and 7 classes; ECE before and after the temperature), the tau curve on
   valid for the record, and the robustness suite against the previous bundled model on identical
   corrupted inputs.

    python experiments/bundle_recipe.py [--previous fercli/weights/ferplus8_lfer_ldl_fp16.pt] [--only RUN,RUN]

``--only`` searches just the fine-tunes named (those new since the last search); the earlier rows of
bundle_search.json are kept, marked ``searched_before``.

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

NEW_NAME = "ferplus8_lfer_v8_fp16.pt"
REPLACES = "ferplus8_lfer_v7_fp16.pt"  # the default NEW_NAME replaces (its robustness is compared too)
# tau < 0 moves a re-balanced model back toward accuracy; steps of 1/8 (one forward pass per alpha, so cheap)
TAUS = tuple(i / 8 for i in range(-4, 13))
ALPHAS = tuple(i / 8 for i in range(9))
TTAS = ("none", "flip")  # flip doubles the cost of a face; chosen only where the holdout says it pays
MAX_ACC_DROP = 0.01  # fallback rule: the operating point may cost at most 1 point of holdout accuracy
# issue 13's rare-class targets, required of the operating point on the holdout
FLOORS = {"mean_class_accuracy": 0.65, "min_recall": 0.25}
# issue 13's robustness target, asked of each run's chosen point on its holdout (the corrupted copies of train
# images no run trained on), and of the current bundled model on the same inputs
ROBUST_FLOOR = 0.75
RECIPE_KEYS = ("arch", "epochs", "batch_size", "lr", "nesterov", "sched", "warmup_epochs", "weight_decay", "augment",
               "ema", "loss", "beta", "targets", "target_mix", "input_size", "seed", "balance", "select")


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


@torch.no_grad()
def holdout_robustness(model: torch.nn.Module, pre: Any, shift: np.ndarray, tta: str, data: Any,
                       ws: Workspace, temperature: float = 1.0) -> dict[str, Any]:
    """The robustness suite on the holdout at one operating point, as the shipped file computes it: softmax of
    (logits + ``shift``) / ``temperature``, flip-averaged when ``tta`` is flip (where the temperature can change
    the class). The suite's clean figures, its mean accuracy, and whether both reach the targets."""
    from fercli.data import cache_dir_for
    from fercli.robustness import score_suite

    bias = torch.as_tensor(shift, dtype=torch.float32)

    def probs(x: torch.Tensor) -> np.ndarray:
        xn = pre.normalize(x, torch.device("cpu"))
        p = torch.softmax((model(xn).float() + bias) / temperature, 1)
        if tta == "flip":
            p = (p + torch.softmax((model(xn.flip(-1)).float() + bias) / temperature, 1)) / 2
        return p.numpy()

    m = data.manifest
    rep = score_suite(probs, pre.input_size, [m.root / r for r in data.valid.paths], data.valid.paths,
                      data.valid.labels.numpy(), list(data.classes), manifest_sha=ws.sha256(m.path),
                      cache_dir=cache_dir_for(ws.root))
    clean = rep["clean"]
    out = {"clean_accuracy": clean["accuracy"], "mean_class_accuracy": clean["mean_class_accuracy"],
           "min_recall": min(clean["per_class_accuracy"].values()), "mean_accuracy": rep["summary"]["mean_accuracy"],
           "worst": rep["summary"]["worst"], "worst_accuracy": rep["summary"]["worst_accuracy"]}
    out["meets_floors"] = all(out[k] >= v for k, v in FLOORS.items())
    out["meets_robustness"] = out["mean_accuracy"] >= ROBUST_FLOOR
    return out


def rank_key(r: dict[str, Any]) -> tuple[bool, bool, float]:
    """How runs (and the current bundled model) are ranked on the holdout's suite: the rare-class floors,
    then the robustness target, then clean accuracy."""
    return r["meets_floors"], r["meets_robustness"], r["clean_accuracy"]


def current_bundle(ws: Workspace, data: Any, path: Path = BUNDLED_MODEL) -> dict[str, Any]:
    """The shipped model on the same holdout suite (its adjustment is folded in; its own TTA)."""
    ckpt = load_checkpoint(path)
    model = model_from_checkpoint(ckpt)[0].float()
    return {"file": path.name, **holdout_robustness(model, preset_from_meta(ckpt), np.zeros(len(data.classes)),
                                                    ckpt.get("tta") or "none", data, ws,
                                                    float(ckpt.get("temperature") or 1.0))}


def choose_operating_point(curve: list[dict[str, Any]]) -> dict[str, Any]:
    """The tau with the best mean per-class accuracy among those within MAX_ACC_DROP of tau = 0's accuracy."""
    base = next(p for p in curve if p["tau"] == 0.0)["accuracy"]
    ok = [p for p in curve if p["accuracy"] >= base - MAX_ACC_DROP]
    return max(ok, key=lambda p: (p["mean_class_accuracy"], -p["tau"]))


def choose_point(grid: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """The operating point over every (alpha, tta, tau): ((alpha, tta)'s grid entry, the tau point, the rule).

    The best holdout accuracy among the points that reach FLOORS (ties: no TTA, then smaller |tau|, then
    smaller alpha); without one, choose_operating_point on the largest alpha (its better TTA at tau = 0).
    """
    ok = [(g, p) for g in grid for p in g["curve"] if all(p[k] >= v for k, v in FLOORS.items())]
    if ok:
        g, p = max(ok, key=lambda gp: (gp[1]["accuracy"], gp[0]["tta"] == "none", -abs(gp[1]["tau"]),
                                       -gp[0]["alpha"]))
        floors = ", ".join(f"{k.replace('_', ' ')} >= {v:.0%}" for k, v in FLOORS.items())
        return g, p, f"the best holdout accuracy among the points with holdout {floors}"
    top = max(e["alpha"] for e in grid)
    g = max((e for e in grid if e["alpha"] == top), key=lambda e: (next(p for p in e["curve"] if p["tau"] == 0.0)
                                                                   ["accuracy"], e["tta"] == "none"))
    return g, choose_operating_point(g["curve"]), (f"best holdout mean per-class accuracy within {MAX_ACC_DROP:.0%} "
                                                    "of tau=0's holdout accuracy")


def interpolate(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """(1 - alpha) * base + alpha * tuned for floating-point tensors; counters come from ``tuned``."""
    return {k: torch.lerp(base[k].float(), v.float(), alpha).to(v.dtype) if v.is_floating_point() else v.clone()
            for k, v in tuned.items()}


def search(name: str) -> dict[str, Any]:
    """The operating-point search of run ``name`` on its holdout: every (alpha, tau), and the one chosen."""
    source = c.WS / "runs" / recipe.EXP / name / "best.pt"
    ckpt = load_checkpoint(source)
    model, _ = model_from_checkpoint(ckpt)
    base = recipe.FINETUNES[name][0] if name in recipe.FINETUNES else None
    # a run of the study ("recipe/<run>"), or a file such as a bundled model (its path in the repository)
    base_name = recipe._rel(base) if isinstance(base, Path) else f"{recipe.EXP}/{base}" if base else None
    tuned_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    base_ckpt = load_checkpoint(recipe.base_weights(base)) if base else None
    base_state = model_from_checkpoint(base_ckpt)[0].state_dict() if base_ckpt else None
    ws = Workspace(c.WS)
    data = prepare_data(run_config(ckpt), ws)
    pre = preset_from_meta(ckpt)
    y = data.valid.labels.numpy()
    prior = np.bincount(data.train.labels.numpy(), minlength=len(data.classes)).astype(np.float64)
    grid = []
    for alpha in ALPHAS if base_state is not None else (1.0,):
        if base_state is not None:
            model.load_state_dict(interpolate(base_state, tuned_state, alpha))
        plain, flipped = holdout_logits(model, data.valid, pre)
        acc_plain = float((plain.argmax(1) == y).mean())
        acc_flip = float(((_softmax(plain) + _softmax(flipped)) / 2).argmax(1).__eq__(y).mean())
        # TTA is part of the operating point: each (alpha, tta) gets its tau curve on what inference will compute
        # (under flip, the mean softmax of both views' adjusted logits), and choose_point weighs them all. Until
        # v5, tta was fixed per alpha at tau = 0 (flip when it won there), its curve on log(mean softmax) + shift.
        for tta in TTAS:
            views = [flipped] if tta == "flip" else []
            grid.append({"alpha": alpha, "accuracy": acc_plain, "accuracy_flip_tta": acc_flip, "tta": tta,
                         "curve": adjustment_curve(plain, y, prior, TAUS, views), "_logits": (plain, flipped)})
        c.log.info("alpha %.2f: holdout accuracy %.4f (flip %.4f)", alpha, acc_plain, acc_flip)
    g, point, rule = choose_point(grid)
    if base_state is not None:
        model.load_state_dict(interpolate(base_state, tuned_state, g["alpha"]))
    shift = -point["tau"] * np.log(prior / prior.sum())
    plain, flipped = g["_logits"]
    # the temperature the file will carry: under flip TTA it can change the class, so the suite (and the choice
    # to ship) is scored with it; the search above ranks points at T = 1
    temperature = fit_temperature(plain + shift, y, [flipped + shift] if g["tta"] == "flip" else None)
    robust = holdout_robustness(model, pre, shift, g["tta"], data, ws, temperature)
    c.log.info("%s: alpha %.3f, tau %.3f: holdout suite clean %.4f, robustness mean %.4f", name, g["alpha"],
               point["tau"], robust["clean_accuracy"], robust["mean_accuracy"])
    return {"name": name, "source": source, "ckpt": ckpt, "model": model, "base_name": base_name,
            "tuned_state": tuned_state, "base_state": base_state, "base_ckpt": base_ckpt, "prior": prior, "y": y, "grid": grid,
            "g": g, "point": point, "rule": rule, "temperature": temperature, "meets_floors": all(point[k] >= v for k, v in FLOORS.items()),
            "holdout_robustness": robust, "data": data}


def summary_of(found: dict[str, Any]) -> dict[str, Any]:
    """What bundled.json records of a run's search: its chosen point on the holdout."""
    p = found["point"]
    return {"alpha": found["g"]["alpha"], "tau": p["tau"], "tta": found["g"]["tta"], "tta_searched": True,
            "accuracy": p["accuracy"],
            "mean_class_accuracy": p["mean_class_accuracy"], "min_recall": p["min_recall"],
            "meets_floors": found["meets_floors"], "holdout_robustness": found["holdout_robustness"]}


def build(found: dict[str, Any], run: dict[str, Any], previous: Path, dest: Path, robustness: bool = True,
          searched: dict[str, Any] | None = None, replaces: Path | None = None) -> dict[str, Any]:
    """Fold the chosen operating point into the run's weights, export, score and compare robustness with
    ``previous`` (the first bundled model, issue 13's baseline) and ``replaces`` (the default it replaces)."""
    name, source, ckpt, model, base_name = found["name"], found["source"], found["ckpt"], found["model"], found["base_name"]
    tuned_state, base_state, prior, y = found["tuned_state"], found["base_state"], found["prior"], found["y"]
    grid, g, point, rule, base_ckpt = found["grid"], found["g"], found["point"], found["rule"], found["base_ckpt"]
    ws = Workspace(c.WS)
    alpha, tta, curve = g["alpha"], g["tta"], g["curve"]
    acc_plain, acc_flip = g["accuracy"], g["accuracy_flip_tta"]
    work = c.WS / "bundle" / "recipe"
    work.mkdir(parents=True, exist_ok=True)
    if base_state is not None:
        model.load_state_dict(interpolate(base_state, tuned_state, alpha))
        # the interpolated weights before the adjustment: what "source" means below (scored on valid for the record)
        source = work / "interpolated.pt"
        save_checkpoint(source, {**ckpt, "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}})
    shift = -point["tau"] * np.log(prior / prior.sum())
    layer = fold_logit_adjustment(model, shift)
    # the adjusted model's logits, without running it again; the temperature fits what inference computes
    temperature = found["temperature"]
    ckpt = {**ckpt, "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "temperature": temperature, "tta": tta,
            "logit_adjustment": {"tau": point["tau"], "prior": (prior / prior.sum()).tolist(), "folded_into": layer,
                                 "rule": rule}}
    if base_name:
        ckpt["weight_interpolation"] = {"base": base_name, "alpha": alpha,
                                        "weights": "(1 - alpha) * base + alpha * this run"}
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
    compared = [("new", dest), ("previous", previous)]
    if replaces is not None and replaces.is_file() and replaces.resolve() not in (dest, previous):
        compared.append(("replaced", replaces))
    for label, model_path in compared:
        robust[label] = run_robustness(model_path, c.MANIFEST8, "test", out=work / f"robustness-{label}", ws=ws,
                                       track=no_track) if robustness else None
    return {
        "file": dest.relative_to(c.ROOT).as_posix() if dest.is_relative_to(c.ROOT) else str(dest), "bytes": dest.stat().st_size, "sha256": sha256_file(dest),
        "source_run": f"{recipe.EXP}/{name}", "source_command": run["command"], "hardware": run.get("hardware"),
        "recipe": {k: ckpt["config"].get(k) for k in RECIPE_KEYS},
        "best_epoch": run["train"]["best_epoch"], "epochs": run["train"]["epochs_run"],
        "candidates_holdout": {k: r["train"]["best_val_acc"] for k, r in candidates().items()},
        **({"finetunes_searched": searched} if searched else {}),
        "holdout": {"images": len(y), "accuracy": acc_plain, "accuracy_flip_tta": acc_flip, "tta": tta,
                    "tta_searched": True,
                    "tau_curve": curve, "tau": point["tau"], "rule": rule, "temperature": temperature,
                    **({"interpolation": {"base_run": base_name, "alpha": alpha, "floors": FLOORS,
                                          "base_recipe": {k: base_ckpt["config"].get(k) for k in RECIPE_KEYS},
                                          "grid": [{k: v for k, v in e.items() if k != "_logits"} for e in grid]}}
                       if base_name else {})},
        "source_ferplus_valid_8": {"accuracy": valid["accuracy"], "mean_class_accuracy": valid["mean_class_accuracy"],
                                   "tta": tta},
        "export": {k: export.get(k) for k in ("format", "max_abs_diff", "parity")},
        "commands": [f"python experiments/bundle_recipe.py  # from {recipe.EXP}/{name}",
                     f"fer export bundle/recipe/adjusted.pt --format checkpoint --half --out bundle/recipe/{NEW_NAME}",
                     "fer eval data/ferplus8.parquet --model fercli/weights/" + NEW_NAME + " --split test"],
        "robustness": {k: {"clean": v["clean"], "corruptions": {n: {kk: vv for kk, vv in e.items()
                                                                   if kk in ("accuracy", "mean_class_accuracy", "drop")}
                                                               for n, e in v["corruptions"].items()},
                           "summary": v["summary"],
                           "model": {**v["model"], "path": recipe._rel(Path(v["model"]["path"]))}}
                       for k, v in robust.items() if v},
        "previous": {"file": previous.name, "sha256": sha256_file(previous)},
        **({"replaced": {"file": replaces.name, "sha256": sha256_file(replaces)}} if "replaced" in robust else {}),
        **scores,
    }


def _on_disk(name: str) -> bool:
    base = recipe.FINETUNES[name][0]
    return (c.WS / "runs" / recipe.EXP / name / "best.pt").is_file() and recipe.base_weights(base).is_file()


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--previous", type=Path, default=bundle.FIRST_MODEL, help="the model to compare robustness with")
    p.add_argument("--run", help="bundle this run instead of the best holdout candidate")
    p.add_argument("--only", help="search only these fine-tunes (comma-separated), e.g. the ones new since the last "
                                  "search; the others' records in bundle_search.json are kept")
    p.add_argument("--replaces", type=Path, default=BUNDLED_MODEL.parent / REPLACES,
                   help="the default model the new one replaces, also compared on robustness")
    p.add_argument("--dest", type=Path, default=BUNDLED_MODEL.parent / NEW_NAME, help="where the bundled file goes")
    p.add_argument("--no-robustness", action="store_true", help="skip the robustness comparison (smoke tests)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads for the holdout search (default 1, like every run of the study: beside a "
                        "training run, two threads took 120 s per alpha against one thread's 11 s)")
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    c.setup_logging()
    runs = candidates()
    if not runs:
        raise SystemExit(f"no finished lfer runs in {recipe.RESULTS}: run experiments/recipe.py first")
    # a fine-tune is searched only while its weights and its base's are on disk (run directories are not
    # committed: a run made on a machine since handed back keeps only its result JSON)
    tuned = [k for k in runs if k in recipe.FINETUNES and _on_disk(k)]
    for k in sorted(set(runs) & set(recipe.FINETUNES) - set(tuned)):
        c.log.warning("%s: not searched, its weights (or its base's) are no longer on disk", k)
    if opts.only and opts.run:
        raise SystemExit("--only and --run exclude each other: --run bundles one run without a search among several")
    if opts.only:
        only = [n.strip() for n in opts.only.split(",") if n.strip()]
        unknown = [n for n in only if n not in tuned]
        if unknown:
            raise SystemExit(f"--only {unknown[0]}: not a finished fine-tune with its weights on disk "
                             f"(these are: {', '.join(tuned) or 'none'})")
        tuned = only
    names = [opts.run] if opts.run else tuned or [max(runs, key=lambda k: runs[k]["train"]["best_val_acc"])]
    found = {n: search(n) for n in names}
    # among several fine-tunes, by rank_key on the holdout's suite: the floors, the robustness target, accuracy
    name = max(found, key=lambda n: rank_key(found[n]["holdout_robustness"]))
    searched = {n: summary_of(f) for n, f in found.items()}
    if opts.only:  # the runs searched before stay on record (same holdout images, so their rows compare)
        before = c.read_result(recipe.RESULTS / "bundle_search.json") or {}
        searched = {**{n: {**r, "searched_before": True, "tta_searched": r.get("tta_searched", False)}
                       for n, r in before.get("searched", {}).items() if n not in searched}, **searched}
    # the shipped model on the same holdout inputs: a new file ships only if it ranks above it
    current = current_bundle(Workspace(c.WS), found[name]["data"])
    decision = {"searched": searched, "chosen": name, "current_bundle": current, "robust_floor": ROBUST_FLOOR,
                "floors": FLOORS, "ships": opts.run is not None or rank_key(searched[name]["holdout_robustness"])
                > rank_key(current)}
    c.write_result(recipe.RESULTS / "bundle_search.json", decision)
    if not decision["ships"]:
        c.log.warning("kept %s: on the holdout's suite it ranks at or above %s (clean %.4f vs %.4f, robustness mean "
                      "%.4f vs %.4f); see results/recipe/bundle_search.json", current["file"], name,
                      current["clean_accuracy"], searched[name]["holdout_robustness"]["clean_accuracy"],
                      current["mean_accuracy"], searched[name]["holdout_robustness"]["mean_accuracy"])
        return
    result = build(found[name], runs[name], opts.previous.resolve(), opts.dest.resolve(), not opts.no_robustness,
                   searched if len(searched) > 1 else None, opts.replaces.resolve())
    result["holdout"]["current_bundle"] = current
    c.write_result(recipe.RESULTS / "bundled.json", result)
    c.log.info("bundled %s from %s: FERPlus valid %.4f (8), mean per-class %.4f; %.2f MB", result["file"], name,
               result["ferplus_valid_8"]["accuracy"], result["ferplus_valid_8"]["mean_class_accuracy"],
               result["bytes"] / 1e6)


if __name__ == "__main__":
    main()
