"""Turn the committed result JSONs into docs/RESULTS.md's tables and docs/img/ plots.

Every number in the generated blocks of docs/RESULTS.md and docs/MODEL_CARD.md (between ``<!-- BEGIN name -->`` and
``<!-- END name -->``) comes from experiments/results/; the prose around them is written by hand.
Runs still missing are listed as such, never filled in. The recipe study (experiments/results/recipe/,
issue 13) is rendered by report_recipe.py, and the new model's card, once its bundled.json exists, by report_card.py.

    python experiments/report.py
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import _common as c

from fercli.fileio import atomic_path, atomic_write_text

DOC = c.ROOT / "docs" / "RESULTS.md"
CARD = c.ROOT / "docs" / "MODEL_CARD.md"
IMG = c.ROOT / "docs" / "img"
VARIANT_NOTES = {
    "shufflenet_v2": "ShuffleNetV2 1.0x baseline",
    "lfer_head": "+ Mish depthwise-separable output module",
    "lfer": "+ Conv1 width 29 and PDWRes (the paper's student)",
    "lfer_ldl": "+ KL to the ResNet-18 teacher's distributions (LFER-LDL)",
    "lfer_votes": "+ KL to the FERPlus crowd-vote distributions instead",
}


def load_dir(exp: str, results: Path = c.RESULTS) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((results / exp).glob("*.json"))}


def pct(x: float) -> str:
    return f"{100 * x:.2f}"


def pm(values: list[float]) -> str:
    m, sd = c.mean_std(values)
    return f"{100 * m:.2f} ± {100 * sd:.2f}" if len(values) > 1 else f"{100 * m:.2f}"


def cost_table() -> dict[str, dict]:
    from fercli.bench import count_cost
    from fercli.models import create_model

    return {arch: count_cost(create_model(arch, 8), 64) for arch in ("shufflenet_v2", "lfer_head", "lfer")}


def ablation_block(runs: dict[str, dict]) -> tuple[str, dict]:
    costs = cost_table()
    lines = [("| variant | what changes | params | MACs at 64 | seeds | FERPlus valid, 8 cl. (%) | 7 cl. (%) | "
             "mean-class, 8 cl. (%) | holdout (%) | CPU h |"),
             "|---|---|---:|---:|---|---:|---:|---:|---:|---:|"]
    by_variant: dict[str, list[dict]] = {}
    for name, r in runs.items():
        by_variant.setdefault(name.rsplit("-s", 1)[0], []).append(r)
    for v, note in VARIANT_NOTES.items():
        rs = by_variant.get(v, [])
        cost = costs.get(v, costs["lfer"])  # the LDL variants are lfer networks
        if not rs:
            lines.append(f"| `{v}` | {note} | {cost['params']:,} | {cost['macs'] / 1e6:.2f}M | not run yet | | | | | |")
            continue
        lines.append(
            f"| `{v}` | {note} | {cost['params']:,} | {cost['macs'] / 1e6:.2f}M | {', '.join(str(r['seed']) for r in rs)} | "
            f"{pm([r['ferplus_valid_8']['accuracy'] for r in rs])} | {pm([r['ferplus_valid_7']['accuracy'] for r in rs])} | "
            f"{pm([r['ferplus_valid_8']['mean_class_accuracy'] for r in rs])} | "
            f"{pm([r['train']['best_val_acc'] for r in rs])} | {sum(r['train_seconds'] for r in rs) / 3600:.2f} |")
    lines.append("")
    lines.append("Mean ± sample standard deviation over the seeds listed; one seed has no spread. Accuracy on the "
                 "3,191 labelled FERPlus valid images (8 classes; 7 classes: the 3,175 without contempt, scored "
                 "over the 7 outputs), measured once at the end with the checkpoint chosen on the holdout. "
                 "CPU h: training time (one core per run).")
    base, ldl = by_variant.get("shufflenet_v2", []), by_variant.get("lfer_ldl", [])
    diff = {}
    if base and ldl:
        b = {r["seed"]: r["ferplus_valid_8"]["accuracy"] for r in base}
        l_ = {r["seed"]: r["ferplus_valid_8"]["accuracy"] for r in ldl}
        mb, sb = c.mean_std(list(b.values()))
        ml, sl = c.mean_std(list(l_.values()))
        paired = [l_[s] - b[s] for s in sorted(set(b) & set(l_))]
        mp, sp = c.mean_std(paired) if paired else (float("nan"), float("nan"))
        diff = {"mean_diff": ml - mb, "baseline_std": sb, "ldl_std": sl, "paired": paired, "paired_mean": mp,
                "paired_std": sp}
        spread = (f"seed spreads ± {100 * sl:.2f} and ± {100 * sb:.2f}" if len(l_) > 1 and len(b) > 1
                  else "one seed each so far, no spread yet")
        lines += ["", f"**LFER-LDL vs the ShuffleNetV2 baseline** (8 classes): {100 * (ml - mb):+.2f} points "
                  f"(means {pct(ml)} vs {pct(mb)}; {spread}). "
                  "Per seed (same seed = same holdout split and order): "
                  + ", ".join(f"{100 * d:+.2f}" for d in paired)
                  + (f" (mean {100 * mp:+.2f} ± {100 * sp:.2f})." if len(paired) > 1 else ".")]
    return "\n".join(lines), diff


def beta_block(runs: dict[str, dict], ablation: dict[str, dict], img: Path = IMG) -> str:
    rows = []
    if "lfer_ldl-s0" in ablation:
        rows.append((0.2, ablation["lfer_ldl-s0"]))
    rows += [(float(k.split("-")[1]), r) for k, r in runs.items()]
    rows.sort(key=lambda t: t[0])
    if not rows:
        return "_No beta runs yet._"
    lines = ["| beta | FERPlus valid, 8 cl. (%) | 7 cl. (%) | mean-class, 8 cl. (%) | macro-F1, 8 cl. (%) | holdout (%) | run |",
             "|---:|---:|---:|---:|---:|---:|---|"]
    for b, r in rows:
        e8, e7 = r["ferplus_valid_8"], r["ferplus_valid_7"]
        lines.append(f"| {b:.1f} | {pct(e8['accuracy'])} | {pct(e7['accuracy'])} | {pct(e8['mean_class_accuracy'])} | "
                     f"{pct(e8['macro_f1'])} | {pct(r['train']['best_val_acc'])} | `{r['experiment']}/{r['run']}` |")
    plot_beta(rows, img / "beta_sweep.png")
    lines += ["", "![beta sweep](img/beta_sweep.png)"]
    return "\n".join(lines)


def plot_beta(rows: list[tuple[float, dict]], dest: Path) -> None:
    fig, ax = figure((5.5, 3.6))
    b = [x for x, _ in rows]
    for key, label, style in (("accuracy", "accuracy", "o-"), ("mean_class_accuracy", "mean per-class accuracy", "^:"),
                              ("macro_f1", "macro F1", "s--")):
        ax.plot(b, [100 * r["ferplus_valid_8"][key] for _, r in rows], style, label=label)
    ax.set(xlabel="beta (combo loss, eq. 6)", ylabel="%", title="LFER-LDL on FERPlus valid (8 classes), seed 0")
    save(fig, ax, dest)


def figure(size: tuple[float, float]):
    """A headless matplotlib figure and axes (the plots' shared setup)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def save(fig, ax, dest: Path) -> None:
    """Grid, legend, layout, then write ``dest`` atomically and free the figure."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def curves_plot(runs: dict[str, dict], teacher: dict | None, dest: Path) -> None:
    fig, ax = figure((6.5, 4))
    for name, r in runs.items():
        if name.endswith("-s0"):
            h = r["train"]["history"]
            ax.plot([x["epoch"] for x in h], [100 * x["val_acc"] for x in h], label=name[:-3])
    if teacher:
        h = teacher["train"]["history"]
        ax.plot([x["epoch"] for x in h], [100 * x["val_acc"] for x in h], "k--", label="teacher (resnet18)")
    ax.set(xlabel="epoch", ylabel="holdout accuracy (%)", title="Learning curves, seed 0 (10% of FERPlus train held out)")
    save(fig, ax, dest)


TARGET = 0.84  # the FERPlus authors' VGG13 on majority labels, the issue's bar
BUDGET_COLORS = {"shufflenet_v2": "tab:blue", "lfer_ldl": "tab:orange"}  # one colour per variant in both plots


def budget_points(v: str, runs: dict[str, dict], ablation: dict[str, dict]) -> list[dict]:
    """Seed-0 runs of variant ``v`` by length: the ablation's 20 epochs, then the budget runs."""
    short = ablation.get(f"{v}-s0")
    longs = [r for k, r in runs.items() if k.startswith(f"{v}-e")]
    return sorted(([short] if short else []) + longs, key=lambda r: r["train"]["epochs_run"])


def fit_budget(epochs: list[int], acc: list[float]) -> dict:
    """Final valid accuracy against training epochs, extrapolated two ways to ``TARGET``.

    ``loglinear``: acc = a + b ln E (least squares), the optimistic reading: each doubling of the
    schedule keeps adding what it added so far. ``saturating``: acc = A - B E^-c with A the
    asymptote, fitted by linear least squares over a grid of c; with three points it passes through
    them, so it is as noisy as they are (seed spread about ±0.35 points). ``epochs_to_target`` is
    ``None`` where a model cannot reach the target (slope <= 0, or asymptote below it); the saturating
    fit is left out where the points do not bend over enough to place an asymptote below 100% (best c
    at the grid's floor, or A >= 1).
    """
    import numpy as np

    e, y = np.asarray(epochs, float), np.asarray(acc, float)
    out: dict = {"epochs": epochs, "accuracy": acc}
    if len(e) < 2:
        return out
    b, a = np.polyfit(np.log(e), y, 1)
    out["loglinear"] = {"a": float(a), "b_per_doubling": float(b * np.log(2)),
                        "epochs_to_target": float(np.exp((TARGET - a) / b)) if b > 0 else None}
    if len(e) >= 3:
        best, grid = None, np.linspace(0.02, 4.0, 400)
        for cexp in grid:
            x = np.stack([np.ones_like(e), -e ** -cexp], 1)
            (amax, bcoef), *_ = np.linalg.lstsq(x, y, rcond=None)
            sse = float(np.sum((x @ [amax, bcoef] - y) ** 2))
            if bcoef > 0 and (best is None or sse < best[0]):
                best = (sse, float(cexp), float(amax), float(bcoef))
        if best and best[1] > grid[0] and best[2] < 1.0:
            sse, cexp, amax, bcoef = best
            reach = (bcoef / (amax - TARGET)) ** (1 / cexp) if amax > TARGET else None
            out["saturating"] = {"asymptote": amax, "B": bcoef, "c": cexp, "rms": (sse / len(e)) ** 0.5,
                                 "epochs_to_target": reach}
    return out


def budget_block(runs: dict[str, dict], ablation: dict[str, dict], img: Path = IMG) -> tuple[str, dict]:
    lines = ["| variant | epochs | FERPlus valid, 8 cl. (%) | 7 cl. (%) | mean-class, 8 cl. (%) | holdout (%) | train acc, last epoch (%) | CPU h | run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    pairs, fits = [], {}
    for v in ("shufflenet_v2", "lfer_ldl"):
        points = budget_points(v, runs, ablation)
        for r in points:
            e8 = r["ferplus_valid_8"]
            lines.append(f"| `{v}` | {r['train']['epochs_run']} | {pct(e8['accuracy'])} | {pct(r['ferplus_valid_7']['accuracy'])} | "
                         f"{pct(e8['mean_class_accuracy'])} | {pct(r['train']['best_val_acc'])} | "
                         f"{pct(r['train']['history'][-1]['train_acc'])} | {r['train_seconds'] / 3600:.2f} | "
                         f"`{r['experiment']}/{r['run']}` |")
            pairs.append((v, r))
        if points:
            fits[v] = fit_budget([r["train"]["epochs_run"] for r in points],
                                 [r["ferplus_valid_8"]["accuracy"] for r in points])
            fits[v]["cpu_hours_per_epoch"] = (sum(r["train_seconds"] for r in points)
                                              / sum(r["train"]["epochs_run"] for r in points) / 3600)
    if not runs:
        lines.append("| _longer runs_ | 40, 60 | not finished yet (`python experiments/budget.py` resumes them) | | | | | | |")
        return "\n".join(lines), fits
    plot_budget(pairs, img / "ferplus_budget.png")
    lines += ["", "![budget](img/ferplus_budget.png)", "", fit_table(fits)]
    if any("loglinear" in f for f in fits.values()):
        plot_budget_fit(fits, img / "ferplus_budget_fit.png")
        lines += ["", "![budget fit](img/ferplus_budget_fit.png)"]
    return "\n".join(lines), fits


def fit_table(fits: dict[str, dict]) -> str:
    """What the learning curve says about reaching ``TARGET`` (see fit_budget for the two models)."""
    def epochs_and_hours(n: float | None, per_epoch: float) -> str:
        return "not reached" if n is None else f"{n:,.0f} ({n * per_epoch:,.1f} CPU h)"

    head = (f"| variant | gain per doubling of epochs (points) | epochs to {100 * TARGET:.0f}%, log-linear | "
            f"asymptote, saturating fit (%) | epochs to {100 * TARGET:.0f}%, saturating |")
    lines = [head, "|---|---:|---:|---:|---:|"]
    for v, f in fits.items():
        if "loglinear" not in f:
            continue
        ll, sat, h = f["loglinear"], f.get("saturating"), f["cpu_hours_per_epoch"]
        lines.append(f"| `{v}` | {100 * ll['b_per_doubling']:.2f} | {epochs_and_hours(ll['epochs_to_target'], h)} | "
                     f"{pct(sat['asymptote']) if sat else '—'} | "
                     f"{epochs_and_hours(sat['epochs_to_target'], h) if sat else '—'} |")
    lines += ["", ("Gain per doubling: the log-linear fit's slope. CPU h: one run of that length on one core, at the "
                   "variant's measured cost per epoch. —: the points do not bend over enough to place an asymptote "
                   "below 100%, so the saturating fit says nothing.")]
    return "\n".join(lines)


def plot_budget(pairs: list[tuple[str, dict]], dest: Path) -> None:
    fig, ax = figure((6.5, 4))
    # the longest schedule solid, shorter ones dashed, then dotted
    lengths = sorted({r["train"]["epochs_run"] for _, r in pairs}, reverse=True)
    styles = dict(zip(lengths, itertools.cycle(("-", "--", ":"))))
    for v, r in pairs:
        h, n = r["train"]["history"], r["train"]["epochs_run"]
        ax.plot([x["epoch"] for x in h], [100 * x["val_acc"] for x in h], styles[n], color=BUDGET_COLORS.get(v),
                label=f"{v}, {n} epochs (holdout)")
    ax.axhline(100 * TARGET, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="epoch", ylabel="holdout accuracy (%)", title="Longer schedules, seed 0")
    save(fig, ax, dest)


def plot_budget_fit(fits: dict[str, dict], dest: Path) -> None:
    import numpy as np

    fig, ax = figure((6.5, 4))
    grid = np.geomspace(10, 1000, 200)
    for v, f in fits.items():
        color = BUDGET_COLORS.get(v)
        ax.plot(f["epochs"], [100 * a for a in f["accuracy"]], "o", color=color, label=f"{v} (seed 0, FERPlus valid)")
        if not (ll := f.get("loglinear")):
            continue
        ax.plot(grid, 100 * (ll["a"] + ll["b_per_doubling"] / np.log(2) * np.log(grid)), ":", color=color,
                label=f"{v}, log-linear")
        if sat := f.get("saturating"):
            ax.plot(grid, 100 * (sat["asymptote"] - sat["B"] * grid ** -sat["c"]), "-", color=color,
                    label=f"{v}, saturating")
    ax.axhline(100 * TARGET, color="grey", lw=0.8, ls="--", label=f"{100 * TARGET:.0f}% (FERPlus VGG13)")
    ax.set_xscale("log")
    ax.set_ylim(65, 92)  # the log-linear lines run past 100% eventually; that part says nothing
    ax.set(xlabel="training epochs (lr schedule scaled to the length)", ylabel="FERPlus valid, 8 classes (%)",
           title="Accuracy against budget, extrapolated")
    save(fig, ax, dest)


def teacher_block(t: dict | None) -> str:
    if not t:
        return "_Teacher not trained yet._"
    q = t["gen_labels"]
    return "\n".join([
        "| teacher | epochs | holdout (%) | FERPlus valid, 8 cl. (%) | 7 cl. (%) | CPU h | distributions: agreement with labels | mean max prob |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        (f"| ResNet-18 | {t['train']['epochs_run']} (best {t['train']['best_epoch']}) | {pct(t['train']['best_val_acc'])} | "
        f"{pct(t['ferplus_valid_8']['accuracy'])} | {pct(t['ferplus_valid_7']['accuracy'])} | {t['train_seconds'] / 3600:.2f} | "
        f"{pct(q['agreement'])} | {q['mean_max_prob']:.3f} |")])


def dist_block(d: dict | None) -> str:
    if not d:
        return "_Not run yet._"
    lines = [(f"Over the {d['images']:,} labelled training images ({d['held_out_by_teacher']:,} of them held out "
             "by the teacher for model selection, so never fitted)."), "",
             "| distribution q | mean KL(votes ‖ q) | top-1 = vote majority (%) | mean entropy (nats) | mean max prob |",
             "|---|---:|---:|---:|---:|"]
    for name, r in d["rows"].items():
        kl = "∞" if r["mean_kl"] == float("inf") else f"{r['mean_kl']:.4f}"
        if r["mean_kl"] == float("inf"):
            kl += f" ({100 * r['infinite_kl_fraction']:.1f}% of images infinite)"
        lines.append(f"| {name} | {kl} | {pct(r['top1_agreement'])} | {r['mean_entropy']:.3f} | {r['mean_max_prob']:.3f} |")
        for part, label in (("fitted_images", "fitted"), ("held_out_images", "held out")):
            if part in r:
                p = r[part]
                lines.append(f"| &nbsp;&nbsp;{name}, {label} images ({p['images']:,}) | {p['mean_kl']:.4f} | "
                             f"{pct(p['top1_agreement'])} | {p['mean_entropy']:.3f} | {p['mean_max_prob']:.3f} |")
    return "\n".join(lines)


def bundled_block(b: dict | None) -> str:
    if not b:
        return "_No bundled model yet._"
    e8, e7 = b["ferplus_valid_8"], b["ferplus_valid_7"]
    return "\n".join([
        (f"`{b['file']}` ({b['bytes'] / 1e6:.2f} MB, float16 weights), exported from `{b['source_run']}` "
        f"(chosen by holdout accuracy among the study's LDL runs; FERPlus valid was not looked at to choose it)."), "",
        "| model | FERPlus valid, 8 cl. (%) | 7 cl. (%) | mean-class, 8 cl. (%) | macro-F1, 8 cl. (%) | KL(votes ‖ prediction) |",
        "|---|---:|---:|---:|---:|---:|",
        (f"| bundled (fp16) | {pct(e8['accuracy'])} | {pct(e7['accuracy'])} | {pct(e8['mean_class_accuracy'])} | "
        f"{pct(e8['macro_f1'])} | {e8['votes']['mean_kl_votes_pred']:.4f} |"),
        "", "![confusion matrix](img/ferplus_confusion.png)"])


def card_block(b: dict | None) -> str:
    if not b:
        return "_No bundled model yet._"
    e8, e7 = b["ferplus_valid_8"], b["ferplus_valid_7"]
    lines = [(f"Overall: **{pct(e8['accuracy'])}%** on 8 classes ({e8['images']:,} images), {pct(e7['accuracy'])}% on 7 "
             f"(contempt images left out, {e7['images']:,}); mean per-class accuracy {pct(e8['mean_class_accuracy'])}%, "
             f"macro-F1 {pct(e8['macro_f1'])}%; mean KL(crowd votes ‖ prediction) {e8['votes']['mean_kl_votes_pred']:.3f}."),
             "", "| class | images | recall (%) | precision (%) | F1 (%) |", "|---|---:|---:|---:|---:|"]
    for name in e8["classes"]:
        p = e8["per_class"][name]
        lines.append(f"| {name} | {p['support']} | {pct(p['recall'])} | {pct(p['precision'])} | {pct(p['f1'])} |")
    lines += ["", (f"File: {b['bytes'] / 1e6:.2f} MB, sha256 `{b['sha256'][:16]}...`, from `{b['source_run']}`; "
              f"float16 export parity: max abs logit difference {b['export']['max_abs_diff']:.1e} on random inputs; "
              f"the float32 checkpoint it came from scores {pct(b['source_ferplus_valid_8'])}% (8 classes).")]
    return "\n".join(lines)


def recipe_block(b: dict | None) -> str:
    if not b or "recipe" not in b:
        return "_Recipe not recorded: rerun `python experiments/bundle.py`._"
    r = b["recipe"]
    drops = list(range(r["lr_step"], r["epochs"], r["lr_step"]))
    cands = ", ".join(f"`{k}` {pct(v)}" for k, v in sorted(b["candidates_holdout"].items(), key=lambda kv: -kv[1]))
    return "\n".join([
        (f"**Schedule.** {r['epochs']} epochs, batch {r['batch_size']}, {r['input_size']}×{r['input_size']} inputs, "
         f"lr {r['lr']:g} ×{r['lr_gamma']:g} after epoch{'s' if len(drops) > 1 else ''} "
         f"{' and '.join(str(d) for d in drops)}, weight decay {r['weight_decay']:g}, combo-loss β {r['beta']:g}, "
         f"seed {r['seed']}; the checkpoint is from epoch {b['best_epoch']}, the best on the holdout."),
        "",
        (f"**How it was chosen.** The LDL run with the best holdout accuracy (%) of the study's candidates: {cands}. "
         "FERPlus valid played no part."),
        "", f"**Command.** `{workspace_relative(b['source_command'])}`, then `{b['commands'][0]}` "
        "(paths relative to the study's workspace, `runs/ferplus`, and the repository)."])


def workspace_relative(command: str) -> str:
    """A recorded command without this machine's absolute paths or the --resume of a run continued after a cut."""
    command = command.replace(f"{c.WS}/", "").replace(f"{c.ROOT}/", "").replace(" --resume", "")
    # commands recorded in another checkout (the docs regenerate identically in any clone)
    command = re.sub(r"(?<!\S)/\S*?/runs/ferplus/", "", command)
    return re.sub(r"(?<!\S)/\S*?/(experiments|fercli)/", r"\1/", command)


def hours_block(all_runs: list[dict], teacher: dict | None) -> str:
    train = sum(r["train_seconds"] for r in all_runs) + (teacher["train_seconds"] if teacher else 0)
    return (f"Training time of everything above: {train / 3600:.2f} CPU-hours (one core per run, {len(all_runs)} "
            f"student runs{' and the teacher' if teacher else ''}), summed from the runs' own epoch timings; "
            "evaluation and label generation add a few minutes.")


def replace_block(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    if begin not in text or end not in text:
        raise SystemExit(f"no {begin} ... {end} block in the document")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}\n{end}{tail}"


def render(img: Path = IMG, results: Path = c.RESULTS, recipe_results: Path | None = None) -> tuple[str, str, dict]:
    """docs/RESULTS.md and docs/MODEL_CARD.md with every generated block refreshed from ``results`` (plots
    into ``img``), and summary.json's content; writes nothing else."""
    import sys

    sys.modules.setdefault("report", sys.modules[__name__])  # the recipe modules import this one's helpers
    import report_card
    import report_recipe as rr

    ablation = load_dir("ablation", results)
    beta = load_dir("beta", results)
    budget = load_dir("budget", results)
    teacher = c.read_result(results / "teacher.json")
    dist = c.read_result(results / "dist_quality.json")
    bundled = c.read_result(results / "bundled.json")
    recipe_runs = rr.load(recipe_results or results / "recipe")
    table, diff = ablation_block(ablation)
    budget_text, budget_fits = budget_block(budget, ablation, img)
    if ablation or teacher:
        curves_plot(ablation, teacher, img / "ferplus_curves.png")
    if bundled:
        import numpy as np

        from fercli.evaluation import plot_confusion

        e8 = bundled["ferplus_valid_8"]
        plot_confusion(np.asarray(e8["confusion"]), e8["classes"],
                       f"bundled lfer LDL on FERPlus valid (acc {e8['accuracy']:.3f})", img / "ferplus_confusion.png")
    recipe_blocks, contrasts = rr.results_blocks(recipe_runs, teacher, img)
    text = DOC.read_text()
    for name, body in (("ablation", table), ("teacher", teacher_block(teacher)),
                       ("beta", beta_block(beta, ablation, img)), ("dist", dist_block(dist)),
                       ("bundled", bundled_block(bundled)), ("budget", budget_text),
                       ("hours", hours_block([*ablation.values(), *beta.values(), *budget.values()], teacher)),
                       *recipe_blocks.items()):
        text = replace_block(text, name, body)
    if "bundled" in recipe_runs:  # the new bundled model's card (the previous model becomes a note in it)
        card = report_card.model_card(CARD.read_text(), recipe_runs["bundled"], bundled, img)
    elif "<!-- BEGIN card -->" in CARD.read_text():  # the first model's card
        card = replace_block(replace_block(CARD.read_text(), "card", card_block(bundled)), "recipe",
                             recipe_block(bundled))
    else:  # the card is already the new model's, and there are no results to regenerate it from
        card = CARD.read_text()
    summary = {"ablation_ldl_vs_baseline": diff, "budget_fits": budget_fits}
    if contrasts:
        summary["recipe_contrasts"] = contrasts
    return text, card, summary


def main() -> None:
    c.parser(__doc__).parse_args()
    text, card, summary = render()
    atomic_write_text(DOC, text)
    atomic_write_text(CARD, card)
    c.write_result(c.RESULTS / "summary.json", summary)
    print(f"updated {DOC.relative_to(c.ROOT)}, {CARD.relative_to(c.ROOT)} and {IMG.relative_to(c.ROOT)}/")


if __name__ == "__main__":
    main()
