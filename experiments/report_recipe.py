"""The recipe study's part of docs/RESULTS.md (issue 13), called by report.py.

"The modern recipe": the blocks ``recipe-protocol``, ``recipe-teacher``, ``recipe-compare`` (the 2x2
and its contrasts), ``recipe-candidates`` and ``recipe-cost``, from experiments/results/recipe/*.json
and the two protocol files. The new bundled model's card is report_card.py's.

Every function takes the loaded JSONs and returns markdown, so any subset of the study's results
renders; runs still missing are named, never filled in. Plots go to the ``img`` folder given.
"""

from __future__ import annotations

import dataclasses
import json
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import _common as c
import recipe
from report import pct, pm, workspace_relative

from fercli.fileio import atomic_path

RESULTS = c.RESULTS / recipe.EXP
SEEDS = (0, 1)  # recipe.py --seeds default: the runs the comparison expects at least
COMPARE_NOTES = {  # recipe.COMPARE's variants: network, targets
    "shufflenet_v2": ("ShuffleNetV2 1.0x", "single labels"),
    "shufflenet_v2_ldl": ("ShuffleNetV2 1.0x", "+ teacher LDL"),
    "lfer": ("LFER (Conv1 29, PDWRes, Mish head)", "single labels"),
    "lfer_ldl": ("LFER (Conv1 29, PDWRes, Mish head)", "+ teacher LDL"),
}
CONTRASTS = (  # (a, b, what): a - b, per seed
    ("lfer", "shufflenet_v2", "Architecture, single labels"),
    ("lfer_ldl", "shufflenet_v2_ldl", "Architecture, with teacher LDL"),
    ("shufflenet_v2_ldl", "shufflenet_v2", "LDL, on ShuffleNetV2"),
    ("lfer_ldl", "lfer", "LDL, on LFER"),
)
AUGMENT_TEXT = {  # fercli.augment's presets, in words
    "paper": "horizontal flip",
    "light": ("per face, `torchvision.transforms.v2` (`fercli.augment`, one random draw per face): flip, affine "
              "(rotation ±10°, scale 0.9-1.1, shift 10%), brightness/contrast 0.3"),
    "strong": ("per face, `torchvision.transforms.v2`: flip, random resized crop (scale 0.6-1), rotation ±15°, "
               "brightness/contrast 0.4, saturation, random grayscale, blur and JPEG (p 0.2 each), "
               "random erasing (p 0.5)"),
}


# ---- small helpers ------------------------------------------------------------------------------

def load(results: Path = RESULTS) -> dict[str, dict]:
    """Every result JSON of the study by name (``teacher``, ``bundled``, ``lfer-s0``, ...)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(results.glob("*.json"))}


def lowest_recall(e: dict) -> tuple[float, list[str]]:
    """The lowest recall over the classes present in an evaluation, and the classes that have it."""
    pc = {k: v for k, v in e["per_class"].items() if v["support"]}
    low = min(v["recall"] for v in pc.values())
    return low, [k for k, v in pc.items() if v["recall"] == low]


def classes_text(names: list[str], sep: str = ", ") -> str:
    """Class names, or how many when more than three tie (a model that predicts one class)."""
    return f"{len(names)} classes" if len(names) > 3 else (sep.join(names) if sep != ", " else _join(names))


def is_gpu(r: dict) -> bool:
    return str(r.get("device", "cpu")).startswith("cuda")


def training_time(runs: Iterable[dict]) -> str:
    """Training time of ``runs``: CPU-hours for the CPU ones (one thread each), GPU seconds for the others."""
    runs = list(runs)
    cpu = [r["train_seconds"] for r in runs if not is_gpu(r)]
    gpu = [r["train_seconds"] for r in runs if is_gpu(r)]
    parts = ([f"{sum(cpu) / 3600:.2f} CPU h"] if cpu else []) + ([f"{sum(gpu):,.0f} GPU s"] if gpu else [])
    return " + ".join(parts) or "—"


def clean_command(cmd: str | None) -> str:
    """A recorded command without machine paths (this one's or the GPU machine's), --json or --resume."""
    if not cmd:
        return "(not recorded)"
    cmd = re.sub(r"^fer -w \S+ ", "fer ", workspace_relative(cmd))
    cmd = re.sub(r"(?<![\w.])/\S*?/(?=(?:runs|data|labels|experiments|bundle|fercli)/)", "", cmd)
    return cmd.replace(" --json", "")


def by_seed(runs: dict[str, dict], variant: str) -> dict[int, dict]:
    return {r["seed"]: r for name, r in runs.items() if name.rsplit("-s", 1)[0] == variant and "-s" in name}


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def subplots(size: tuple[float, float], ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=size)


def save_png(fig, dest: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---- RESULTS.md: protocol -----------------------------------------------------------------------

def _section(path: Path, name: str) -> dict[str, Any]:
    """A protocol file's section over the defaults of the config it feeds (what a run really used)."""
    from fercli.training import TeacherConfig, TrainConfig

    cls = TeacherConfig if name == "pretrain-teacher" else TrainConfig
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {**defaults, **tomllib.loads(path.read_text()).get(name, {})}


def _lr_text(t: dict) -> str:
    if t["sched"] == "cosine":
        w = t["warmup_epochs"]
        return f"{t['lr']:g}, cosine per iteration" + (f" after a {w:g}-epoch linear warm-up" if w else "")
    drops = list(range(t["lr_step"], t["epochs"], t["lr_step"])) if "epochs" in t else []
    return (f"{t['lr']:g}, ×{t['lr_gamma']:g} every {t['lr_step']} epochs"
            + (f" (after epochs {_join([str(d) for d in drops])})" if drops else ""))


def _aug_text(t: dict) -> str:
    text = AUGMENT_TEXT.get(t["augment"], t["augment"])
    if t["augment"] == "paper":
        text = f"horizontal flip {t['flip']:g}" + (f" + random shift up to {100 * t['shift']:g}%" if t["shift"] else "")
    extra = [f"{k} {t[k]}" for k in ("auto_augment", "mix") if t.get(k, "none") != "none"]
    return f"`{t['augment']}`: {text}" + (f"; {', '.join(extra)}" if extra else "")


def _aug_short(t: dict) -> str:
    if t["augment"] == "paper":
        return "`paper` (flip" + (" + shift)" if t["shift"] else ")")
    return f"`{t['augment']}`"


PROTOCOL_ROWS: tuple[tuple[str, tuple[str, ...], Callable[[dict], str]], ...] = (
    ("optimiser", ("momentum", "nesterov"),
     lambda t: f"SGD, momentum {t['momentum']:g}" + (", Nesterov" if t["nesterov"] else "")),
    ("learning rate", ("lr", "sched", "lr_step", "lr_gamma", "warmup_epochs"), _lr_text),
    ("weight decay", ("weight_decay",), lambda t: f"{t['weight_decay']:g}"),
    ("augmentation", ("augment", "flip", "shift", "auto_augment", "mix"), _aug_text),
    ("weight averaging", ("ema",),
     lambda t: f"EMA of the weights, decay {t['ema']:g} (the EMA is validated, saved and exported)" if t["ema"]
     else "none"),
    ("loss", ("loss", "alpha", "beta", "kl_weight", "label_smoothing"),
     lambda t: (f"combo (eq. 6, α {t['alpha']:g}, β {t['beta']:g})" if t["loss"] == "combo" else t["loss"])
     + (f", KL weight {t['kl_weight']:g}" if t["kl_weight"] != 1 else "")
     + (f", label smoothing {t['label_smoothing']:g}" if t["label_smoothing"] else "")),
    ("model selection", ("val_fraction", "select"),
     lambda t: f"best epoch by holdout {'accuracy' if t['select'] == 'acc' else t['select']} "
               f"(stratified {100 * (t['val_fraction'] or 0):g}% of train)"),
    ("calibration", ("calibrate",),
     lambda t: "temperature fitted on the holdout after training, stored in best.pt" if t["calibrate"]
     else "none (T = 1)"),
)
IGNORED_KEYS = {"workers", "threads", "checkpoint_every", "epochs", "device", "cache"}


def protocol_rows(old: dict, new: dict) -> list[tuple[str, str, str]]:
    """(setting, old, new) for every setting in which two protocol sections differ."""
    rows, covered = [], set(IGNORED_KEYS)
    for label, keys, text in PROTOCOL_ROWS:
        covered |= set(keys)
        a, b = text(old), text(new)
        if a != b:
            rows.append((label, a, b))
    for k in sorted((set(old) | set(new)) - covered):
        if old.get(k) != new.get(k):
            rows.append((f"`{k}`", str(old.get(k, "—")), str(new.get(k, "—"))))
    return rows


def _epochs_text(runs: dict[str, dict], teacher: bool = False) -> str:
    """The epochs the study's runs used (recipe.py sets them per run, not the protocol file)."""
    groups = ({"the teacher": [runs["teacher"]] if "teacher" in runs else []} if teacher else
              {"the comparison": [r for k, r in runs.items() if k.rsplit("-s", 1)[0] in recipe.COMPARE and "-s" in k],
               "the candidates": [runs[k] for k in recipe.CANDIDATES if k in runs],
               "the fine-tunes": [runs[k] for k in recipe.FINETUNES if k in runs]})
    parts = [f"{'/'.join(str(e) for e in sorted({r['train']['epochs_run'] for r in rs}))} ({g})"
             for g, rs in groups.items() if rs]
    return "; ".join(parts) if parts else "set per run by recipe.py (no run finished yet)"


def protocol_block(runs: dict[str, dict], old_path: Path = c.PROTOCOL, new_path: Path = recipe.PROTOCOL) -> str:
    old_name, new_name = (p.relative_to(c.ROOT).as_posix() for p in (old_path, new_path))
    old_t, new_t = _section(old_path, "train"), _section(new_path, "train")
    lines = [f"| students | 20-epoch protocol (`{old_name}`) | the recipe (`{new_name}`) |", "|---|---|---|",
             f"| epochs | {old_t['epochs']} | {_epochs_text(runs)} |"]
    lines += [f"| {k} | {a} | {b} |" for k, a, b in protocol_rows(old_t, new_t)]
    old_p, new_p = _section(old_path, "pretrain-teacher"), _section(new_path, "pretrain-teacher")
    teacher_rows = protocol_rows(old_p, new_p)
    lines += ["", "| teacher (`pretrain-teacher`) | 20-epoch protocol | the recipe |", "|---|---|---|",
              f"| epochs | {old_p['epochs']} | {_epochs_text(runs, teacher=True)} |"]
    lines += [f"| {k} | {a} | {b} |" for k, a, b in teacher_rows]
    same = [f"{k.replace('_', ' ')} {new_t[k]}" for k in ("input_size", "batch_size") if old_t[k] == new_t[k]]
    lines += ["", (f"Generated from the two files; what they share ({', '.join(same)}, the loss, the holdout) is left "
                   "out, and a key a file does not set reads as `fer train`'s default. Epochs are set per run by "
                   "`recipe.py` (`--compare-epochs`, `--candidate-epochs`, `--teacher-epochs`): those of the "
                   "finished runs.")]
    return "\n".join(lines)


# ---- RESULTS.md: teacher ------------------------------------------------------------------------

def _teacher_row(label: str, aug: str, t: dict, where: str) -> str:
    e8, e7 = t["ferplus_valid_8"], t["ferplus_valid_7"]
    mca = pct(e8["mean_class_accuracy"]) if "mean_class_accuracy" in e8 else "—"
    low = lowest_recall(e8) if "per_class" in e8 else None
    return (f"| {label} | {aug} | {t['train']['epochs_run']} (best {t['train']['best_epoch']}) | "
            f"{pct(t['train']['best_val_acc'])} | {pct(e8['accuracy'])} | {pct(e7['accuracy'])} | {mca} | "
            f"{f'{pct(low[0])} ({classes_text(low[1])})' if low else '—'} | {training_time([t])} | {where} |")


def teacher_block(t: dict | None, old: dict | None, new_path: Path = recipe.PROTOCOL,
                  old_path: Path = c.PROTOCOL) -> str:
    if not t:
        return "_Teacher not trained yet (`python experiments/recipe.py --only teacher`)._"
    aug = _aug_short(_section(new_path, "pretrain-teacher"))
    where = t.get("hardware") or "not recorded"
    lines = ["| teacher | augmentation | epochs | holdout (%) | FERPlus valid, 8 cl. (%) | 7 cl. (%) | "
             "mean-class, 8 cl. (%) | lowest per-class recall (%) | training | where |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---|",
             _teacher_row("ResNet-18, the recipe", aug, t, where)]
    if old:
        lines.append(_teacher_row("ResNet-18, 20-epoch protocol (above)",
                                  _aug_short(_section(old_path, "pretrain-teacher")),
                                  old,
                                  old.get("hardware") or "the 2-core CPU, one thread"))
    q = t.get("gen_labels") or {}
    where_made = (f"Trained on the {'GPU' if is_gpu(t) else 'other'} machine (`{t['trained_elsewhere']}`), then scored "
                  "on FERPlus valid here. ") if t.get("trained_elsewhere") else ""
    lines += ["", f"{where_made}Command: `{clean_command(t.get('command'))}`."]
    if q:
        kl = f", mean KL(votes ‖ teacher) {q['kl_votes']:.3f}" if q.get("kl_votes") is not None else ""
        lines += ["", (f"Its label distributions (`fer gen-labels`, T = 1) on the training images: top-1 = the vote "
                       f"majority for {pct(q['agreement'])}%{kl}, mean max probability {q['mean_max_prob']:.3f}"
                       + (f" (the 20-epoch teacher's: {pct(old['gen_labels']['agreement'])}%, "
                          f"{old['gen_labels']['mean_max_prob']:.3f})." if old and old.get("gen_labels") else "."))]
    return "\n".join(lines)


# ---- RESULTS.md: the 2x2 comparison -------------------------------------------------------------

def contrast(a: dict[int, dict], b: dict[int, dict]) -> dict[str, Any]:
    """``a`` - ``b`` (runs by seed) on FERPlus valid, 8 classes: means, per-seed differences, the seed
    spread (the larger sample sd of the two, from variants with two seeds or more) and a verdict."""
    acc = lambda r: r["ferplus_valid_8"]["accuracy"]  # noqa: E731
    mca = lambda r: r["ferplus_valid_8"]["mean_class_accuracy"]  # noqa: E731
    if not a or not b:
        return {"verdict": "missing"}
    (ma, sa), (mb, sb) = c.mean_std([acc(r) for r in a.values()]), c.mean_std([acc(r) for r in b.values()])
    sds = [s for s, runs in ((sa, a), (sb, b)) if len(runs) > 1]
    spread = max(sds) if sds else None
    paired = {s: acc(a[s]) - acc(b[s]) for s in sorted(set(a) & set(b))}
    d = list(paired.values())
    if not d:
        verdict = "no_common_seed"
    elif spread is None or len(d) < 2:
        verdict = "no_spread"
    elif all(x == 0 for x in d):
        verdict = "equal"
    elif all(x >= 0 for x in d) or all(x <= 0 for x in d):  # one sign (a zero is no change of sign)
        beyond = all(abs(x) > spread for x in d)
        verdict = ("ahead" if max(d) > 0 else "behind") + ("_beyond_spread" if beyond else "_within_spread")
    else:
        verdict = "mixed_signs"
    return {"mean_a": ma, "mean_b": mb, "mean_diff": ma - mb, "spread": spread,
            "paired": {str(s): x for s, x in paired.items()},
            "mean_class_diff": (sum(map(mca, a.values())) / len(a) - sum(map(mca, b.values())) / len(b)),
            "verdict": verdict}


def points(d: float) -> str:
    return f"{100 * d:+.2f}"


def contrast_text(a: str, b: str, what: str, k: dict) -> str:
    """One paragraph stating ``k`` (see contrast) in words that follow the numbers' signs."""
    if k["verdict"] == "missing":
        return f"**{what}** (`{a}` − `{b}`): not available yet, `{a}` or `{b}` has no finished run."
    d = k["mean_diff"]
    size = f"{abs(100 * d):.2f}"
    where = "level with" if size == "0.00" else f"{size} points {'above' if d > 0 else 'below'}"
    out = (f"**{what}** (`{a}` − `{b}`): `{a}` is {where} `{b}` on average ({pct(k['mean_a'])} vs {pct(k['mean_b'])}; "
           f"mean per-class accuracy {points(k['mean_class_diff'])} points).")
    if k["paired"]:
        out += " Per seed: " + ", ".join(f"{points(x)} (seed {s})" for s, x in k["paired"].items())
        out += f"; seed spread ± {100 * k['spread']:.2f}." if k["spread"] is not None else "."
    n = len(k["paired"])
    out += " " + {
        "no_common_seed": "No seed has been run for both yet, so there is no per-seed difference.",
        "no_spread": ("Too few seeds for a seed spread yet, so this cannot be told from seed noise." if n < 2 else
                      "One seed per variant, so no seed spread yet: this cannot be told from seed noise."),
        "equal": "Identical on every seed.",
        "ahead_beyond_spread": (f"`{a}` is ahead on every seed, each time by more than the seed spread: a difference "
                                f"at this budget, in `{a}`'s favour."),
        "behind_beyond_spread": (f"`{a}` is behind on every seed, each time by more than the seed spread: a difference "
                                 f"at this budget, in `{b}`'s favour."),
        "ahead_within_spread": (f"`{a}` is never behind, but not ahead by more than the seed spread on every seed: not "
                                f"resolved with {n} seeds."),
        "behind_within_spread": (f"`{a}` is never ahead, but not behind by more than the seed spread on every seed: not "
                                 f"resolved with {n} seeds."),
        "mixed_signs": "The sign changes from seed to seed: no difference resolved.",
    }[k["verdict"]]
    return out


def _cell(values: list[float]) -> str:
    return pm(values)


def compare_block(runs: dict[str, dict], img: Path) -> tuple[str, dict]:
    variants = {v: by_seed(runs, v) for v in recipe.COMPARE}
    seeds = sorted(set(SEEDS) | {s for rs in variants.values() for s in rs})
    lines = ["| variant | network | targets | seeds | FERPlus valid, 8 cl. (%) | 7 cl. (%) | mean-class, 8 cl. (%) | "
             "lowest per-class recall (%) | holdout (%) | training |",
             "|---|---|---|---|---:|---:|---:|---|---:|---:|"]
    for v, rs in variants.items():
        net, targets = COMPARE_NOTES.get(v, (v, ""))
        if not rs:
            lines.append(f"| `{v}` | {net} | {targets} | not run yet | | | | | | |")
            continue
        rr = [rs[s] for s in sorted(rs)]
        lows = [lowest_recall(r["ferplus_valid_8"]) for r in rr]
        order = rr[0]["ferplus_valid_8"]["classes"]
        low_classes = sorted({n for _, names in lows for n in names}, key=order.index)
        lines.append(
            f"| `{v}` | {net} | {targets} | {', '.join(map(str, sorted(rs)))} | "
            f"{_cell([r['ferplus_valid_8']['accuracy'] for r in rr])} | "
            f"{_cell([r['ferplus_valid_7']['accuracy'] for r in rr])} | "
            f"{_cell([r['ferplus_valid_8']['mean_class_accuracy'] for r in rr])} | "
            f"{_cell([x for x, _ in lows])} ({classes_text(low_classes, '/')}) | "
            f"{_cell([r['train']['best_val_acc'] for r in rr])} | {training_time(rr)} |")
    done = [r for rs in variants.values() for r in rs.values()]
    missing = [f"`{v}-s{s}`" for v, rs in variants.items() for s in seeds if s not in rs]
    notes = ["", ("Mean ± sample standard deviation over the seeds listed (one seed: no spread); lowest per-class "
                  "recall: the class with the lowest recall on FERPlus valid, per seed, averaged; the class(es) in "
                  "brackets. Same seed = same holdout split and order.")]
    budgets = sorted({r["train"]["epochs_run"] for r in done})
    if len(budgets) == 1:
        notes[-1] += f" Every run: {budgets[0]} epochs, the shared budget."
    elif budgets:
        notes[-1] += (" **The runs do not share one budget** (" +
                      ", ".join(f"`{r['run']}` {r['train']['epochs_run']}" for r in done) + " epochs): compare with care.")
    if missing:
        notes += ["", f"Missing: {_join(missing)} (`python experiments/recipe.py --only compare` trains "
                      f"{'it' if len(missing) == 1 else 'them'})."]
    if not done:
        return "\n".join(lines + notes), {}
    summary, paragraphs = {}, []
    for a, b, what in CONTRASTS:
        k = contrast(variants[a], variants[b])
        summary[f"{a} - {b}"] = k
        paragraphs += ["", contrast_text(a, b, what, k)]
    plot_compare(variants, img / "recipe_compare.png")
    return "\n".join(lines + notes + paragraphs + ["", "![the 2x2 comparison](img/recipe_compare.png)"]), summary


def plot_compare(variants: dict[str, dict[int, dict]], dest: Path) -> None:
    """Each seed a dot, the mean a bar, per variant: FERPlus valid accuracy and mean per-class accuracy."""
    fig, axes = subplots((8.5, 3.6), 2)
    markers = ("o", "s", "^", "D", "v")
    names = list(variants)
    labelled: set[int] = set()
    for ax, key, label in ((axes[0], "accuracy", "accuracy, 8 classes (%)"),
                           (axes[1], "mean_class_accuracy", "mean per-class accuracy (%)")):
        for i, v in enumerate(names):
            rs = variants[v]
            for j, s in enumerate(sorted(rs)):
                first = ax is axes[0] and s not in labelled  # one legend entry per seed
                labelled |= {s} if first else set()
                ax.plot(i + 0.08 * (j - (len(rs) - 1) / 2), 100 * rs[s]["ferplus_valid_8"][key],
                        markers[s % len(markers)], color="tab:orange" if v.endswith("_ldl") else "tab:blue",
                        label=f"seed {s}" if first else None, mfc="none" if s % 2 else None)
            if rs:
                m = sum(r["ferplus_valid_8"][key] for r in rs.values()) / len(rs)
                ax.plot([i - 0.25, i + 0.25], [100 * m] * 2, "k-", lw=1.2)
        ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
        ax.set_xlim(-0.6, len(names) - 0.4)
        ax.set(ylabel=label)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=8)
    fig.suptitle("The 2×2 on FERPlus valid: dots = seeds, bars = means (orange: teacher LDL)", fontsize=9)
    save_png(fig, dest)


# ---- RESULTS.md: candidates and cost ------------------------------------------------------------

def _targets_text(r: dict) -> str:
    t = r["train"].get("targets", "?")
    if t == "mix":
        m = re.search(r"--target-mix (\S+)", r.get("command", ""))
        w = float(m.group(1)) if m else 0.5
        key = recipe.label_set_of(r.get("command", ""))  # one of recipe.LABEL_SETS, else the teacher's
        return f"{w:g} × votes + {1 - w:g} × " + (recipe.LABEL_SET_TEXT[key][0] if key else "teacher")
    return {"votes": "crowd votes", "teacher": "teacher", "none": "single labels"}.get(t, t)


def candidates_block(runs: dict[str, dict], bundled: dict | None) -> str:
    lines = ["| candidate | targets (KL) | epochs | holdout (%) | FERPlus valid, 8 cl. (%) | 7 cl. (%) | "
             "mean-class, 8 cl. (%) | lowest per-class recall (%) | training |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for name in [*recipe.CANDIDATES, *recipe.FINETUNES]:
        r = runs.get(name)
        if not r:
            lines.append(f"| `{name}` | | | not run yet | | | | | |")
            continue
        e8 = r["ferplus_valid_8"]
        low, cls = lowest_recall(e8)
        lines.append(f"| `{name}` | {_targets_text(r)} | {r['train']['epochs_run']} (best {r['train']['best_epoch']}) | "
                     f"{pct(r['train']['best_val_acc'])} | {pct(e8['accuracy'])} | "
                     f"{pct(r['ferplus_valid_7']['accuracy'])} | "
                     f"{pct(e8['mean_class_accuracy'])} | {pct(low)} ({classes_text(cls)}) | {training_time([r])} |")
    lines += ["", ("Seed 0, every candidate an `lfer` network with the recipe; FERPlus valid figures of the raw "
                   "runs (T fitted on the holdout, no logit adjustment).")]
    if bundled:
        e8 = bundled["ferplus_valid_8"]
        h = bundled["holdout"]
        cands = bundled.get("candidates_holdout") or {}
        interp = h.get("interpolation")
        how = (f"a fine-tune of `{interp['base_run']}` (a finished fine-tune is preferred; weights interpolated "
               f"with its base at α = {interp['alpha']:g})" if interp else
               "chosen by holdout accuracy among the study's finished `lfer` runs" if not cands or
               max(cands, key=cands.__getitem__) == bundled["source_run"].rsplit("/", 1)[-1] else
               "named with `bundle_recipe.py --run`")
        lines += ["", (f"**Bundled:** `{bundled['source_run']}`, {how}, then given an operating point on its "
                       f"holdout (logit adjustment τ {h['tau']:g}, TTA {h['tta']}, temperature {h['temperature']:.3f}): "
                       f"FERPlus valid {pct(e8['accuracy'])}% (8 classes), mean per-class {pct(e8['mean_class_accuracy'])}%, {bundled['bytes'] / 1e6:.2f} MB. "
                       "See [MODEL_CARD.md](MODEL_CARD.md).")]
    else:
        lines += ["", "Not bundled yet (`python experiments/bundle_recipe.py`)."]
    return "\n".join(lines)


def cost_block(runs: dict[str, dict]) -> str:
    groups = [("teacher", ["teacher"], 1),
              ("2×2 comparison", [k for k in runs if k.rsplit("-s", 1)[0] in recipe.COMPARE and "-s" in k],
               len(recipe.COMPARE) * len(SEEDS)),
              ("bundled-model candidates", [k for k in recipe.CANDIDATES if k in runs], len(recipe.CANDIDATES)),
              ("fine-tunes of a candidate", [k for k in recipe.FINETUNES if k in runs], len(recipe.FINETUNES))]
    lines = ["| part | runs | where | training |", "|---|---:|---|---:|"]
    all_runs = []
    for label, names, expected in groups:
        rs = [runs[k] for k in names if k in runs]
        all_runs += rs
        if not rs:
            lines.append(f"| {label} | 0 of {expected} | | |")
            continue
        by_hw: dict[str, list[dict]] = {}
        for r in rs:
            by_hw.setdefault(r.get("hardware") or "not recorded", []).append(r)
        for hw, hrs in by_hw.items():
            count = f"{len(hrs)}" + (f" of {max(expected, len(rs))}" if len(by_hw) == 1 else "")
            lines.append(f"| {label} | {count} | {hw} | {training_time(hrs)} |")
    if all_runs:
        lines += ["", (f"In all: {training_time(all_runs)}. CPU h: a run's summed epoch timings on one thread (the "
                       "CPU runs use one core each); GPU s: the same timings on the GPU. Scoring on FERPlus valid, "
                       "label generation, bundling and the robustness suite are not counted.")]
    return "\n".join(lines)


def results_blocks(runs: dict[str, dict], old_teacher: dict | None, img: Path) -> tuple[dict[str, str], dict]:
    """The RESULTS.md blocks of the recipe study by name, and the contrasts for summary.json."""
    compare, contrasts = compare_block(runs, img)
    return {"recipe-protocol": protocol_block(runs), "recipe-teacher": teacher_block(runs.get("teacher"), old_teacher),
            "recipe-compare": compare, "recipe-candidates": candidates_block(runs, runs.get("bundled")),
            "recipe-cost": cost_block(runs)}, contrasts
