"""docs/MODEL_CARD.md for the recipe study's bundled model (issue 13), called by report.py.

Once experiments/results/recipe/bundled.json exists, the card describes the new model: the first time
it is seeded from experiments/model_card_v2.md (hand-written prose around ``v2-*`` blocks, ending with
a short note on the previous model); after that only its blocks are regenerated, like RESULTS.md.
Without bundled.json, report.py keeps the previous model's card as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import _common as c
import recipe
from report import pct, replace_block
from report_recipe import (
    classes_text,
    clean_command,
    lowest_recall,
    points,
    save_png,
    subplots,
)

TEMPLATE = c.EXPERIMENTS / "model_card_v2.md"
ARCH_TEXT = {
    "lfer": ("`lfer`: ShuffleNetV2 1.0x with Conv1 width 29, PDWRes and the Mish depthwise-separable output module "
             "(the paper's student)"),
    "shufflenet_v2": "`shufflenet_v2`: ShuffleNetV2 1.0x",
}
TARGETS = (  # issue 13: label, threshold, ">=" or "<=", unit, how to read it from bundled.json (None: not measured)
    ("accuracy, 8 classes", 0.85, ">=", "%", lambda b: b["ferplus_valid_8"]["accuracy"]),
    ("mean per-class accuracy, 8 classes", 0.65, ">=", "%", lambda b: b["ferplus_valid_8"]["mean_class_accuracy"]),
    ("lowest per-class recall, 8 classes", 0.25, ">=", "%", lambda b: lowest_recall(b["ferplus_valid_8"])[0]),
    ("ECE after temperature (15 bins)", 0.03, "<=", "", lambda b: b["ferplus_valid_8"].get("ece")),
    ("mean accuracy over the robustness suite", 0.75, ">=", "%",
     lambda b: ((b.get("robustness") or {}).get("new") or {}).get("summary", {}).get("mean_accuracy")),
    ("file size", 3e6, "<=", "MB", lambda b: b["bytes"]),
)


def targets(b: dict) -> list[dict[str, Any]]:
    """Issue 13's targets against ``b`` (bundled.json): met True/False, or None where not measured."""
    out = []
    for label, threshold, op, unit, read in TARGETS:
        try:
            value = read(b)
        except (KeyError, TypeError, ValueError):
            value = None
        met = None if value is None else (value >= threshold if op == ">=" else value <= threshold)
        out.append({"target": label, "threshold": threshold, "op": op, "unit": unit, "value": value, "met": met})
    return out


def _fmt(value: float, unit: str) -> str:
    return {"%": f"{100 * value:.2f}%", "MB": f"{value / 1e6:.2f} MB", "": f"{value:.3f}"}[unit]


def _fmt_threshold(t: dict) -> str:
    op = "≥" if t["op"] == ">=" else "≤"
    v = t["threshold"]
    return f"{op} " + {"%": f"{100 * v:g}%", "MB": f"{v / 1e6:g} MB", "": f"{v:g}"}[t["unit"]]


def targets_block(b: dict) -> str:
    rows = targets(b)
    lines = ["| target (issue 13) | wanted | measured | |", "|---|---:|---:|---|"]
    for t in rows:
        status = {True: "**met**", False: "not met", None: "not measured"}[t["met"]]
        value = "—" if t["value"] is None else _fmt(t["value"], t["unit"])
        lines.append(f"| {t['target']} | {_fmt_threshold(t)} | {value} | {status} |")
    n_met = sum(t["met"] is True for t in rows)
    measured = sum(t["met"] is not None for t in rows)
    lines += ["", f"{n_met} of {len(rows)} targets met" + (f" ({len(rows) - measured} not measured)." if measured < len(rows)
                                                              else ".")
              + " Accuracy and recall on FERPlus valid (3,191 images), which played no part in training or in "
                "choosing the run, the operating point or the temperature; MB = 10⁶ bytes."]
    return "\n".join(lines)


def _recipe_text(r: dict) -> str:
    parts = [f"{r['epochs']} epochs" if r.get("epochs") else None,
             f"batch {r['batch_size']}" if r.get("batch_size") else None,
             f"{r['input_size']}×{r['input_size']} inputs" if r.get("input_size") else None]
    if r.get("lr") is not None:
        lr = f"SGD lr {r['lr']:g}" + (" Nesterov" if r.get("nesterov") else "")
        if r.get("sched") == "cosine":
            lr += ", cosine" + (f" after a {r['warmup_epochs']:g}-epoch warm-up" if r.get("warmup_epochs") else "")
        parts.append(lr)
    parts += [f"weight decay {r['weight_decay']:g}" if r.get("weight_decay") is not None else None,
              f"augmentation `{r['augment']}`" if r.get("augment") else None,
              f"EMA {r['ema']:g}" if r.get("ema") else None,
              f"{r.get('loss', 'combo')} loss β {r['beta']:g}" if r.get("beta") is not None else None,
              f"seed {r['seed']}" if r.get("seed") is not None else None]
    return ", ".join(p for p in parts if p)


def _teacher_of(run: str | None) -> str:
    """Whose distributions a run of the study mixed with the votes (its command's --labels)."""
    cmd = (c.read_result(recipe.RESULTS / f"{run}.json") or {}).get("command", "") if run else ""
    key = recipe.label_set_of(cmd)
    return recipe.LABEL_SET_TEXT[key][1] if key else "a ResNet-18 teacher's distributions"


def _targets_of(r: dict, run: str | None = None) -> str:
    t = r.get("targets")
    if t == "mix":
        w = r.get("target_mix", 0.5)
        return (f"combo loss (eq. 6) on the majority label + KL (eq. 5) to {w:g} × the FERPlus crowd votes + "
                f"{1 - w:g} × {_teacher_of(run)}")
    return {"votes": "combo loss (eq. 6) on the majority label + KL (eq. 5) to the FERPlus crowd-vote distributions",
            "teacher": f"combo loss (eq. 6) on the majority label + KL (eq. 5) to {_teacher_of(run)}",
            "none": "combo loss (eq. 6) on the majority label"}.get(t, str(t))


def _targets_text(b: dict) -> str:
    """The source run's targets, and its base run's when the shipped weights interpolate the two and they differ."""
    tuned = b["source_run"].rsplit("/", 1)[-1]
    own = _targets_of(b.get("recipe") or {}, tuned)
    interp = (b.get("holdout") or {}).get("interpolation")
    if not interp:
        return own
    base = interp["base_run"].rsplit("/", 1)[-1]
    theirs = _targets_of(interp["base_recipe"], base)
    return own if theirs == own else f"`{base}`: {theirs}; `{tuned}`: {own}"


def _start_of(run: str) -> str:
    """How a run of the study began: from scratch, or from the weights its command's --init names."""
    r = c.read_result(recipe.RESULTS / f"{run}.json") or {}
    m = re.search(r"--init (\S+)", r.get("command", ""))
    return f"initialised from `{m.group(1)}`" if m else "from scratch"


def _optimisation_row(b: dict) -> str:
    r = b.get("recipe") or {}
    interp = (b.get("holdout") or {}).get("interpolation")
    if not interp:
        return f"| optimisation | `experiments/protocol_recipe.toml`: {_recipe_text(r)}; from scratch |"
    base = interp["base_run"].rsplit("/", 1)[-1]
    tuned = b["source_run"].rsplit("/", 1)[-1]
    balance = {"sampler": "class-balanced draws", "logit-adjust": "a logit-adjusted loss"}.get(r.get("balance"), "")
    return (f"| optimisation | `experiments/protocol_recipe.toml`: `{base}` {_start_of(base)} ({_recipe_text(interp['base_recipe'])}); "
            f"`{tuned}` fine-tunes it ({_recipe_text(r)}{', ' + balance if balance else ''}, best epoch by holdout "
            f"{'mean per-class accuracy' if r.get('select') == 'mean-class' else 'accuracy'}); the shipped weights are "
            f"(1 − α)·`{base}` + α·`{tuned}` with α = {interp['alpha']:g} |")


def intro_block(b: dict) -> str:
    from fercli.inference import BUNDLED_MODEL

    name = Path(b["file"]).name
    text = f"`{b['file']}` ({b['bytes'] / 1e6:.2f} MB) ships inside the package. "
    if BUNDLED_MODEL.name == name:
        return text + ("`fer predict` and `fer eval` use it when no `--model` is given and the workspace has no "
                       "student of its own, and say so (`using student (bundled): ...`).")
    return text + (f"It is not the package's default yet (`fercli.inference.BUNDLED_MODEL` is still "
                   f"`{BUNDLED_MODEL.name}`): pass `--model {b['file']}`, or set `FER_BUNDLED_MODEL` to it.")


def what_block(b: dict) -> str:
    r = b.get("recipe") or {}
    e8 = b["ferplus_valid_8"]
    size = r.get("input_size", 64)
    return "\n".join([
        "| | |", "|---|---|",
        f"| architecture | {ARCH_TEXT.get(r.get('arch'), r.get('arch'))} |",
        f"| classes ({len(e8['classes'])}, in output order) | {', '.join(e8['classes'])} |",
        (f"| input | a cropped face, resized to {size}×{size} RGB (grayscale is replicated), scaled to [0, 1], "
         "normalised with the ImageNet mean/std; the checkpoint stores all of this and `fer` applies it |"),
        (f"| file | a fercli checkpoint, float16 weights (computed in float32 when loaded), {b['bytes'] / 1e6:.2f} MB, "
         f"sha256 `{b['sha256']}`; it also stores the temperature, the TTA default and the logit adjustment "
         "(folded into the classifier's bias); loads with `torch.load(..., weights_only=True)` |"),
        ("| training data | FERPlus train (FER2013 images, FERPlus crowd labels): majority-vote labels, minus a "
         "stratified 10% holdout used to pick the epoch, the operating point and the temperature |"),
        f"| training targets | {_targets_text(b)} |",
        _optimisation_row(b),
        f"| trained on | {b.get('hardware') or 'not recorded'} |"])


def made_block(b: dict) -> str:
    return "\n".join([
        (f"**Source run.** `{b['source_run']}`, {b.get('epochs', '?')} epochs, the checkpoint from epoch "
         f"{b.get('best_epoch', '?')} (the best on its holdout). Command, in the study's workspace (`runs/ferplus`): "
         f"`{clean_command(b.get('source_command'))}`."), "",
        f"**Recipe.** {_recipe_text(b.get('recipe') or {})}."])


def _has_suite(searched: dict) -> bool:
    """Whether the searched fine-tunes were also ranked on the holdout's robustness suite (since v5)."""
    return all("holdout_robustness" in p for p in searched.values())


def _ranking_text(b: dict) -> str:
    if not _has_suite(b["finetunes_searched"]):
        return "; among them, the one whose operating point reaches the floors with the best holdout accuracy, below"
    return ("; each is searched for its operating point as below, and at that point the robustness suite is run on "
            "the holdout; they are ranked by the rare-class floors, then the robustness target (suite mean ≥ 75%), "
            "then clean accuracy, and the best ships only if it ranks above the current bundled model on the same "
            "corrupted images")


def choice_block(b: dict) -> str:
    h = b["holdout"]
    cands = sorted(b.get("candidates_holdout", {}).items(), key=lambda kv: -kv[1])
    chosen = b["source_run"].rsplit("/", 1)[-1]
    interp = h.get("interpolation")
    lines = [(f"Everything here is decided on the source run's own holdout ({h['images']:,} images of FERPlus "
              "train); FERPlus valid played no part."), "",
             (f"**Which run.** `{chosen}`, a short fine-tune of `{interp['base_run'].rsplit('/', 1)[-1]}` (finished "
              "fine-tunes are preferred" + (_ranking_text(b) if b.get("finetunes_searched") else "")
              + "). The study's finished `lfer` runs by holdout accuracy:"
              if interp else
              "**Which run.** The best holdout accuracy among the study's finished `lfer` runs:"
              if not cands or cands[0][0] == chosen else
              f"**Which run.** `{chosen}`, named with `bundle_recipe.py --run` (the best holdout accuracy among the "
              f"study's finished `lfer` runs is `{cands[0][0]}`'s):"), "",
             "| run | holdout accuracy (%) |", "|---|---:|"]
    lines += [f"| `{k}`{' (chosen)' if k == chosen else ''} | {pct(v)} |" for k, v in cands]
    searched = b.get("finetunes_searched")
    if searched:
        suite = _has_suite(searched)
        lines += ["", "**The fine-tunes' operating points** (each fine-tune searched on the holdout as below; the chosen one's search in detail below):", "",
                  "| fine-tune | α | τ | TTA | accuracy (%) | mean per-class (%) | lowest recall (%) | reaches the floors |"
                  + (" suite: clean (%) | suite: mean (%) |" if suite else ""),
                  "|---|---:|---:|---|---:|---:|---:|---|" + ("---:|---:|" if suite else "")]
        for k, p in searched.items():
            r = p.get("holdout_robustness") or {}
            before = (" (an earlier search" + ("" if p.get("tta_searched") else ", its TTA fixed at τ = 0") + ")"
                      if p.get("searched_before") else "")
            lines.append(f"| `{k}`{' (chosen)' if k == chosen else ''}{before} | {p['alpha']:g} | {p['tau']:g} | {p['tta']} | "
                         f"{pct(p['accuracy'])} | {pct(p['mean_class_accuracy'])} | {pct(p['min_recall'])} | "
                         f"{'yes' if p['meets_floors'] else 'no'} |"
                         + (f" {pct(r['clean_accuracy'])} | {pct(r['mean_accuracy'])} |" if suite else ""))
        cur = h.get("current_bundle")
        if suite and cur:
            lines.append(f"| `{cur['file']}` (the bundled model it replaces, as shipped) | | | own | | "
                         f"{pct(cur['mean_class_accuracy'])} | {pct(cur['min_recall'])} | "
                         f"{'yes' if cur['meets_floors'] else 'no'} | {pct(cur['clean_accuracy'])} | "
                         f"{pct(cur['mean_accuracy'])} |")
            lines += ["", ("The suite's columns score each point on the holdout's corrupted copies (and its clean "
                           "images decoded the suite's way, at 112 px then resized, hence a clean accuracy a little "
                           "off the search's). Its mean per-class and lowest recall columns, for the replaced model, "
                           "come from the suite's clean images too.")]
    if interp:
        base = interp["base_run"].rsplit("/", 1)[-1]
        lines += ["", (f"**Weight interpolation** (WiSE-FT, Wortsman et al. 2022): w = (1 − α)·`{base}` + α·`{chosen}`, "
                       "one model at no extra inference cost; α = 0 is the base run. On the holdout, at τ = 0, and the "
                       "best accuracy among the τ that reach the rare-class floors:"), "",
                  "| α | TTA | accuracy (%) | mean per-class (%) | lowest recall (%) | best accuracy at the floors (%) | |",
                  "|---:|---|---:|---:|---:|---|---|"]
        for e in interp["grid"]:
            p0 = next(p for p in e["curve"] if p["tau"] == 0)
            ok = [p for p in e["curve"] if all(p[k] >= v for k, v in interp["floors"].items())]
            top = max(ok, key=lambda p: p["accuracy"]) if ok else None
            best = f"{pct(top['accuracy'])} (τ = {top['tau']:g})" if top else "none"
            lines.append(f"| {e['alpha']:g} | {e['tta']} | {pct(p0['accuracy'])} | {pct(p0['mean_class_accuracy'])} | "
                         f"{pct(p0['min_recall'])} | {best} | "
                         f"{'**chosen**' if (e['alpha'], e['tta']) == (interp['alpha'], h['tta']) else ''} |")
    tta = h["tta"]
    lines += ["", (f"**Flip TTA.** Holdout accuracy {pct(h['accuracy'])}% plain, {pct(h['accuracy_flip_tta'])}% "
                   f"averaging the mirrored face: {'on' if tta == 'flip' else 'off'} (`tta = {tta}` in the file; "
                   + (("searched with " + ("α and " if interp else "") + "τ: the operating point's rule below decides).")
                      if h.get("tta_searched") else "flip only when it raises holdout accuracy).")), "",
              ("**Logit adjustment** (Menon et al. 2021): logits − τ·log(train class frequencies), trading accuracy on "
               "frequent classes for recall on rare ones. On the holdout" + (" (with flip TTA)" if tta == "flip" else "")
               + ":"), "",
              "| τ | accuracy (%) | vs τ = 0 (points) | mean per-class (%) | lowest per-class recall (%) | |",
              "|---:|---:|---:|---:|---:|---|"]
    curve = h["tau_curve"]
    base = next((p["accuracy"] for p in curve if p["tau"] == 0), curve[0]["accuracy"])
    for p in curve:
        lines.append(f"| {p['tau']:g} | {pct(p['accuracy'])} | {points(p['accuracy'] - base)} | "
                     f"{pct(p['mean_class_accuracy'])} | {pct(p['min_recall'])} | "
                     f"{'**chosen**' if p['tau'] == h['tau'] else ''} |")
    lines += ["", (f"Chosen: τ = {h['tau']:g}, by the rule: {h['rule']}. " + (
                   "It is folded into the classifier's bias, so `fer eval`, `fer predict` and every export apply it."
                   if h["tau"] else "τ = 0: no adjustment, the weights' own bias.")), "",
              (f"**Temperature.** T = {h['temperature']:.3f}, fitted on the holdout after the adjustment"
               + (" (on the flip-averaged probabilities that inference computes)" if tta == "flip" else "")
               + " and stored in the file (it changes confidences" + (", and under flip TTA, where two views' "
                                                                      "probabilities are averaged, a class now and then"
                                                                      if tta == "flip" else ", never the predicted class")
               + ").")]
    src = b.get("source_ferplus_valid_8")
    if isinstance(src, dict):
        e8 = b["ferplus_valid_8"]
        lines += ["", (f"On FERPlus valid, for the record: the float32 source checkpoint without the adjustment "
                       f"(TTA {src.get('tta', tta)}) scores {pct(src['accuracy'])}% (mean per-class "
                       f"{pct(src['mean_class_accuracy'])}%); the bundled file {pct(e8['accuracy'])}% "
                       f"({pct(e8['mean_class_accuracy'])}%).")]
    return "\n".join(lines)


def valid_block(b: dict, img: Path) -> str:
    e8, e7 = b["ferplus_valid_8"], b["ferplus_valid_7"]
    lines = ["| FERPlus valid | images | accuracy (%) | mean per-class (%) | macro-F1 (%) | lowest per-class recall (%) |",
             "|---|---:|---:|---:|---:|---|"]
    for label, e in (("8 classes", e8), ("7 classes (contempt images left out)", e7)):
        low, cls = lowest_recall(e)
        lines.append(f"| {label} | {e['images']:,} | **{pct(e['accuracy'])}** | {pct(e['mean_class_accuracy'])} | "
                     f"{pct(e['macro_f1'])} | {pct(low)} ({classes_text(cls)}) |")
    lines += ["", "Per class (8 classes):", "", "| class | images | precision (%) | recall (%) | F1 (%) |",
              "|---|---:|---:|---:|---:|"]
    for name in e8["classes"]:
        p = e8["per_class"][name]
        lines.append(f"| {name} | {p['support']} | {pct(p['precision'])} | {pct(p['recall'])} | {pct(p['f1'])} |")
    if "votes" in e8:
        lines += ["", f"Mean KL(crowd votes ‖ prediction): {e8['votes']['mean_kl_votes_pred']:.3f}."]
    if "confusion" in e8:
        import numpy as np

        from fercli.evaluation import plot_confusion

        plot_confusion(np.asarray(e8["confusion"]), e8["classes"],
                       f"bundled model on FERPlus valid (acc {e8['accuracy']:.3f})", img / "recipe_confusion.png")
        lines += ["", "![confusion matrix](img/recipe_confusion.png)"]
    return "\n".join(lines)


def calibration_block(b: dict) -> str:
    e8 = b["ferplus_valid_8"]
    before = (e8.get("calibration") or {}).get("before")
    t = e8.get("temperature", 1.0)
    lines = ["| FERPlus valid, 8 classes | temperature | ECE (15 bins) | NLL |", "|---|---:|---:|---:|"]
    if before:
        lines.append(f"| before (T = 1) | 1 | {before['ece']:.4f} | {before['nll']:.4f} |")
    lines.append(f"| after (T fitted on the holdout) | {t:.3f} | {e8['ece']:.4f} | {e8['nll']:.4f} |")
    if not before:
        lines += ["", "The fitted temperature is 1: nothing changed."]
    else:
        def move(what: str, a: float, b: float) -> str:  # equal at the printed precision: "stays", not "falls"
            if f"{a:.4f}" == f"{b:.4f}":
                return f"{what} stays at {b:.4f}"
            return f"{what} {'falls' if b < a else 'rises'} from {a:.4f} to {b:.4f}"

        lines += ["", (f"{move('ECE', before['ece'], e8['ece'])} and {move('NLL', before['nll'], e8['nll'])}: the "
                       "temperature was fitted on the holdout, these are the report split's.")]
    return "\n".join(lines)


def _compared(b: dict) -> list[tuple[str, dict]]:
    """The models the new one is compared with on robustness: (file name, report), the default it
    replaced first, then the first bundled model (issue 13's baseline)."""
    rob = b.get("robustness") or {}
    out = []
    for key in ("replaced", "previous"):
        if rob.get(key):
            out.append(((b.get(key) or {}).get("file", key), rob[key]))
    return out


def robustness_block(b: dict, img: Path) -> str:
    new = (b.get("robustness") or {}).get("new")
    if not new:
        return "_Not measured (`experiments/bundle_recipe.py` was run with `--no-robustness`)._"
    others = _compared(b)
    head = "| FERPlus valid, 8 classes | new: accuracy (%) | mean per-class (%) |"
    sep = "|---|---:|---:|"
    for name, _ in others:
        head += f" `{name}`: accuracy (%) | new − it (points) |"
        sep += "---:|---:|"
    lines = [head, sep]

    def row(label: str, n: dict, ps: list[dict | None]) -> str:
        out = f"| {label} | {pct(n['accuracy'])} | {pct(n['mean_class_accuracy'])} |"
        for p in ps:
            out += f" {pct(p['accuracy'])} | {points(n['accuracy'] - p['accuracy'])} |" if p else " — | — |"
        return out

    lines.append(row("clean", new["clean"], [o["clean"] for _, o in others]))
    for name, e in new["corruptions"].items():
        lines.append(row(name, e, [o.get("corruptions", {}).get(name) for _, o in others]))

    def mean(s: dict) -> dict:
        return {"accuracy": s["mean_accuracy"], "mean_class_accuracy": s.get("mean_mean_class_accuracy", float("nan"))}

    lines.append(row("**mean over the corruptions**", mean(new["summary"]), [mean(o["summary"]) for _, o in others]))
    ns = new["summary"]
    worst = f"| worst | {ns['worst']}: {pct(ns['worst_accuracy'])} | |"
    for _, o in others:
        worst += f" {o['summary']['worst']}: {pct(o['summary']['worst_accuracy'])} | |"
    lines += [worst, "", ("All models on byte-identical corrupted images (`fercli.robustness`: the same manifest, "
                          "split, seed and cache), each with its own preprocessing, temperature and TTA. Clean: the "
                          "suite's own clean pass (images decoded the suite's way), a little off `fer eval`'s figures.")]
    plot_robustness(new, others, img / "recipe_robustness.png")
    lines += ["", "![robustness, new vs previous](img/recipe_robustness.png)"]
    return "\n".join(lines)


def plot_robustness(new: dict, others: list[tuple[str, dict]], dest: Path) -> None:
    """Accuracy per corruption, the new model next to the ones it is compared with."""
    names = ["clean", *new["corruptions"], "mean"]

    def accs(rep: dict) -> list[float]:
        return ([rep["clean"]["accuracy"]] + [rep["corruptions"].get(n, {}).get("accuracy", float("nan"))
                                              for n in new["corruptions"]] + [rep["summary"]["mean_accuracy"]])

    series = [("new (bundled)", new, "tab:blue"),
              *((name, rep, color) for (name, rep), color in zip(others, ("tab:orange", "tab:gray")))]
    fig, ax = subplots((7.0, 1.6 + (0.24 + 0.12 * len(series)) * len(names)))
    h = 0.8 / len(series)
    ys = list(range(len(names)))
    for i, (label, rep, color) in enumerate(series):
        y = [v - 0.4 + h * (i + 0.5) for v in ys]
        a = accs(rep)
        ax.barh(y, [100 * v for v in a], h, color=color, label=label)
        for yi, v in zip(y, a):  # inside the bar's end, or just past it when the bar is short
            inside = v > 0.1
            ax.text(100 * v + (-1 if inside else 1), yi, f"{100 * v:.1f}", va="center", ha="right" if inside else "left",
                    color="white" if inside else "black", fontsize=6)
    ax.set_yticks(ys, names, fontsize=8)
    ax.invert_yaxis()
    ax.set(xlim=(0, 100), xlabel="accuracy on FERPlus valid, 8 classes (%)", title="Robustness: identical corrupted inputs")
    ax.axvline(75, color="tab:red", lw=0.8, ls=":", label="issue 13: mean ≥ 75%")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.06), ncol=2)
    save_png(fig, dest)


def limits_block(b: dict) -> str:
    e8 = b["ferplus_valid_8"]
    weak = [(k, v) for k, v in e8["per_class"].items() if v["support"] and v["recall"] < 0.5]
    text = ("* **Rare classes.** FERPlus train has 116 disgust, 536 fear and 120 contempt images of 25,045. "
            f"Mean per-class accuracy ({pct(e8['mean_class_accuracy'])}%) is "
            f"{100 * (e8['accuracy'] - e8['mean_class_accuracy']):.1f} points below overall accuracy "
            f"({pct(e8['accuracy'])}%): FERPlus is dominated by neutral and happiness.")
    if weak:
        text += (" Classes found less than half the time on FERPlus valid: "
                 + ", ".join(f"{k} {pct(v['recall'])}% recall ({v['support']} images)" for k, v in weak) + ".")
    return text


def previous_block(old: dict | None) -> str:
    if not old:
        return "_No previous bundled model._"
    e8, e7 = old["ferplus_valid_8"], old["ferplus_valid_7"]
    low, cls = lowest_recall(e8)
    path = c.ROOT / old["file"]
    r = old.get("recipe") or {}
    return (f"`{Path(old['file']).name}` ({old['bytes'] / 1e6:.2f} MB, sha256 `{old['sha256'][:16]}...`), the first "
            f"bundled model, the one issue 13 set out to replace: `lfer` + the 20-epoch teacher's distributions, trained {r.get('epochs', '?')} "
            f"epochs with `experiments/protocol.toml` (step lr, flip + shift, no EMA, no calibration; run "
            f"`{old['source_run']}`). FERPlus valid: {pct(e8['accuracy'])}% (8 classes), {pct(e7['accuracy'])}% (7), "
            f"mean per-class {pct(e8['mean_class_accuracy'])}%, macro-F1 {pct(e8['macro_f1'])}%, lowest per-class "
            f"recall {pct(low)}% ({classes_text(cls)}). "
            + (f"It still ships in `fercli/weights/` (`--model {old['file']}`). " if path.is_file() else "")
            + "Its numbers are in `experiments/results/bundled.json` and RESULTS.md (\"The bundled model\"); its full "
              "card is this file's version before the switch, in the git history.")


def commands_block(b: dict) -> str:
    cmds = [c_.split("  #")[0].strip() for c_ in b.get("commands", [])]
    lines = ["```",
             "# the study (experiments/README.md; a GPU machine: experiments/gpu/run_recipe.sh)",
             "python experiments/recipe.py --jobs 2"
             + (" --only finetune  # the fine-tunes (their bases first)" if "interpolation" in b.get("holdout", {}) else ""),
             "# the source run, as recorded (in the workspace runs/ferplus)",
             clean_command(b.get("source_command")),
             "# the operating point, the fp16 file, FERPlus valid and the robustness comparison",
             *(clean_command(x) for x in cmds),
             "python experiments/report.py                 # this card",
             "```", "",
             "Check the 8-class figure with the data in `../shared`, from the repository root (`ws` is a scratch workspace; any directory will do):", "",
             "```",
             "mkdir -p ws && fer -w ws data import ferplus ../shared/datasets/ferplus",
             f"fer -w ws eval --split valid --model {b['file']}",
             f"fer -w ws eval --split valid --model {b['file']} --robustness   # the corruption suite",
             "```"]
    return "\n".join(lines)


def card_blocks(b: dict, old: dict | None, img: Path) -> dict[str, str]:
    return {"v2-intro": intro_block(b), "v2-what": what_block(b), "v2-made": made_block(b),
            "v2-choice": choice_block(b), "v2-valid": valid_block(b, img), "v2-calibration": calibration_block(b),
            "v2-robustness": robustness_block(b, img), "v2-targets": targets_block(b), "v2-limits": limits_block(b),
            "v2-commands": commands_block(b), "v2-previous": previous_block(old)}


def model_card(current: str, b: dict, old: dict | None, img: Path, template: str | None = None) -> str:
    """docs/MODEL_CARD.md for the bundled model ``b``: the current card's blocks refreshed once it is the v2
    card, else the template (experiments/model_card_v2.md) filled in."""
    text = current if "<!-- BEGIN v2-intro -->" in current else (template or TEMPLATE.read_text())
    for name, body in card_blocks(b, old, img).items():
        text = replace_block(text, name, body)
    return text
