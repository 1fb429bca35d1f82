"""The recipe study: the paper's question again under the modern recipe, and candidates for the bundled model.

Every run uses experiments/protocol_recipe.toml (strong per-face augmentation, Nesterov SGD with a
cosine schedule and warm-up, EMA weights, temperature calibration on the holdout; FERPlus valid is
only the report split). Three groups of runs:

* ``teacher``: a ResNet-18 trained with the recipe, then its label distributions (``fer gen-labels``);
* ``compare`` (issue 13, item 5): {shufflenet_v2, lfer} x {single labels, teacher LDL}, each seed of
  ``--seeds``, all at one shared budget ``--compare-epochs``;
* ``candidates``: longer ``lfer`` runs for the bundled model: crowd-vote targets, and votes mixed
  half and half with the teacher's distributions;
* ``finetune``: short fine-tunes of a finished candidate (rare-class re-balancing).

    python experiments/recipe.py [--jobs 2] [--only teacher,compare,candidates,finetune] [--device cpu]

On a GPU machine the same script runs everything at once (``--jobs 12 --device cuda``), with the
augmentation in ``--workers`` worker processes per run. Each result JSON records the device it was
made on. Results: experiments/results/recipe/<run>.json and teacher.json (``$FER_EXP_RESULTS`` overrides the folder).
"""

from __future__ import annotations

import os
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c

PROTOCOL = c.EXPERIMENTS / "protocol_recipe.toml"
EXP = "recipe"
RESULTS = Path(os.environ.get("FER_EXP_RESULTS", c.RESULTS / EXP))  # a smoke test writes elsewhere
EXTRA: list[str] = []  # --extra: appended to every training command (e.g. --limit for a smoke test)
TEACHER_DIR = c.WS / "runs" / EXP / "teacher-resnet18"
LABELS = c.WS / "labels" / "recipe-teacher-resnet18.parquet"
WEIGHTS = c.ROOT / "fercli" / "weights"
V4 = WEIGHTS / "ferplus8_lfer_v4_fp16.pt"
V7 = WEIGHTS / "ferplus8_lfer_v7_fp16.pt"
# label distributions made by the study's own students (flip-averaged, on train), in place of the lost
# ResNet-18 teacher's: name -> (file, result JSON, teachers). A run of the study is named by its name, a
# file by its path; several teachers make an ensemble (`fer gen-labels --ensemble`).
SELF_LABELS = c.WS / "labels" / "recipe-self-lfer_up96.parquet"
ENS_LABELS = c.WS / "labels" / "recipe-ensemble.parquet"
BUNDLED_ENS_LABELS = c.WS / "labels" / "recipe-ensemble-bundled.parquet"
LABEL_SETS: dict[str, tuple[Path, str, list[str | Path]]] = {
    # self-distillation: lfer_up96's own distributions (born-again networks)
    "self-labels": (SELF_LABELS, "self_labels.json", ["lfer_up96"]),
    # the mean of four students of three lineages, the best ensemble of 2-4 on the holdout (experiments/ensemble.py:
    # 84.99% with flip, against 84.27% for its best member with flip and 84.75% without; the runner-up,
    # lfer_v4_128 + v4, is 1 image behind): lfer_v4_128 and v5 at 128 px, v4 at 96 px, and the first bundled
    # model (64 px, trained on the paper's ResNet-50 distributions). Each member's own logit adjustment is in
    # its bias (v4 tau -0.5, v5 +0.125) and its softmax is taken at T = 1, so the mean is a blend of posteriors
    # as those files predict, not a calibrated one
    "ensemble-labels": (ENS_LABELS, "ensemble_labels.json",
                        ["lfer_v4_128", WEIGHTS / "ferplus8_lfer_v5_fp16.pt", V4, WEIGHTS / "ferplus8_lfer_ldl_fp16.pt"]),
    # the run directories (lfer_v4_128 among them) were lost with the machine once more: an ensemble made of
    # bundled files only, so that it can always be remade: v7, v6 and v5, all at 128 px, of two lineages (v7 from
    # lfer_ens96; v5 and v6 from lfer_v4_128), each with its logit adjustment folded into its bias
    "bundled-ensemble-labels": (BUNDLED_ENS_LABELS, "ensemble_bundled_labels.json",
                                [V7, WEIGHTS / "ferplus8_lfer_v6_fp16.pt", WEIGHTS / "ferplus8_lfer_v5_fp16.pt"]),
}
# how the reports name each label set: (in a table cell, in a sentence)
LABEL_SET_TEXT: dict[str, tuple[str, str]] = {
    "self-labels": ("`lfer_up96`", "`lfer_up96`'s distributions"),
    "ensemble-labels": ("ensemble", "an ensemble of four earlier students' distributions (`recipe.LABEL_SETS`)"),
    "bundled-ensemble-labels": ("bundled v5-v7",
                                "the mean of the bundled v5, v6 and v7's distributions (`recipe.LABEL_SETS`)"),
}


def label_set_of(command: str) -> str | None:
    """The LABEL_SETS key of the distributions a recorded command trained on (its ``--labels``), else None."""
    m = re.search(r"--labels (\S+)", command)
    name = Path(m.group(1)).name if m else None
    return next((k for k, (f, _, _) in LABEL_SETS.items() if f.name == name), None)

# item 5: the 2 x 2 comparison at one shared budget
COMPARE: dict[str, list[Any]] = {
    "shufflenet_v2": ["--arch", "shufflenet_v2", "--targets", "none"],
    "shufflenet_v2_ldl": ["--arch", "shufflenet_v2", "--labels", LABELS, "--targets", "teacher"],
    "lfer": ["--arch", "lfer", "--targets", "none"],
    "lfer_ldl": ["--arch", "lfer", "--labels", LABELS, "--targets", "teacher"],
}


def mix(labels: Path) -> list[Any]:
    """An lfer run's options for targets half crowd votes and half the distributions in ``labels``."""
    return ["--arch", "lfer", "--labels", labels, "--targets", "mix", "--target-mix", 0.5, "--weight-decay", 1e-4]


MIX, ENS = mix(LABELS), mix(ENS_LABELS)  # the teacher's distributions; the ensemble's in their place
BENS = mix(BUNDLED_ENS_LABELS)  # the ensemble of bundled files
# candidates for the bundled model (seed 0, longer)
CANDIDATES: dict[str, list[Any]] = {
    "lfer_votes": ["--arch", "lfer", "--targets", "votes"],
    # lfer_votes ended at 81% train accuracy (augmented) against 80.6% on the holdout: underfitting, not
    # overfitting, so this candidate also lowers weight decay to the old protocol's 1e-4
    "lfer_mix": [*MIX],
    # the input-size lever: at 64 px the last ShuffleNet stage sees a 2x2 map; 96 px costs ~2.25x per epoch
    "lfer_mix96": [*MIX, "--input-size", 96],
    # lfer_mix96 from scratch again, its targets half crowd votes and half the distributions of lfer_up96
    # (FERPlus valid 84.71%, against the lost ResNet-18 teacher's 82.54%; agreement with the majority label
    # on train 88.8% against 85.2%): the teacher that needs no 1.5 CPU h of ResNet training (born-again
    # networks, Furlanello et al. 2018, with the crowd votes kept in the mix)
    "lfer_self96": [*mix(SELF_LABELS), "--input-size", 96],
    # lfer_mix96's recipe with the ensemble's distributions in the teacher's place. A first try under
    # `robust` from scratch trailed lfer_mix96 by 6 points on the holdout at epoch 10 (71.7% against 78.0%;
    # lfer_self96 tracked lfer_mix96 to 0.2): with the 1.3M-parameter student already underfitting under
    # `light`, it was stopped there (0.5 CPU h) for `light` from scratch and `robust` as a fine-tune, the
    # order that made v5 (lfer_ens96_rob below)
    "lfer_ens96": [*ENS, "--input-size", 96],
    # the same at 128 px from scratch (~1.7x the cost of 96 px per epoch): 64 -> 96 px gave lfer_mix +2.0
    # points on valid, while 96 -> 128 px as a fine-tune (v4 -> lfer_v4_128) left the clean accuracy level
    "lfer_ens128": [*ENS, "--input-size", 128],
}
# short fine-tunes of a finished candidate: (base run, epochs, extra options). "lfer_mix_bal" re-balances
# lfer_mix toward the rare classes (class-balanced draws at a tenth of the learning rate, the classifier
# re-balancing stage of Kang et al. 2020 applied to the whole network), its best epoch chosen on the
# holdout's mean per-class accuracy
VOTES = ["--arch", "lfer", "--targets", "votes", "--weight-decay", 1e-4]
VOTES96 = [*VOTES, "--input-size", 96]
VOTES128 = [*VOTES, "--input-size", 128]
ROBUST_FT = ["--augment", "robust", "--lr", 0.01, "--warmup-epochs", 1]  # an accurate run fine-tuned under `robust`


def rebalance(mode: str, lr: float) -> list[Any]:
    """The options of a re-balancing fine-tune: ``--balance mode`` at ``lr``, no warm-up, best epoch by
    holdout mean per-class accuracy."""
    return ["--balance", mode, "--lr", lr, "--warmup-epochs", 0, "--select", "mean-class"]


def robust_rebalance(lr: float) -> list[Any]:
    """A class-balanced re-balancing fine-tune at ``lr`` under the `robust` preset."""
    return ["--augment", "robust", *rebalance("sampler", lr)]


FINETUNES: dict[str, tuple[str | Path, int, list[Any]]] = {
    "lfer_mix_bal": ("lfer_mix", 10, [*MIX, *rebalance("sampler", 0.01)]),
    # the same with square-root sampling (rare classes drawn in proportion to sqrt(count)): a gentler
    # re-balancing, after lfer_mix_bal's false alarms on rare classes (contempt precision 7%)
    "lfer_mix_sqrt": ("lfer_mix", 10, [*MIX, *rebalance("sqrt", 0.01)]),
    # lfer_mix96 (84.96% on valid) lost its run directory with the machine it ran on, and with it the teacher's
    # labels; retraining both takes ~4 CPU hours. The input-size lever at a fraction of that cost: the
    # bundled v3 weights (trained at 64 px; ShuffleNet is fully convolutional) fine-tuned at 96 px on the
    # crowd votes (no teacher needed; the FixRes effect, Touvron et al. 2019), then re-balanced as above
    "lfer_up96": (c.ROOT / "fercli" / "weights" / "ferplus8_lfer_v3_fp16.pt", 12,
                  [*VOTES96, "--lr", 0.02, "--warmup-epochs", 1]),
    "lfer_up96_bal": ("lfer_up96", 8, [*VOTES96, *rebalance("sampler", 0.005)]),
    "lfer_up96_sqrt": ("lfer_up96", 8, [*VOTES96, *rebalance("sqrt", 0.005)]),
    # v4 (lfer_up96_bal) loses 15-16 points to Gaussian noise, the robustness suite's one regression against
    # the first bundled model. The `robust` preset adds the degradations of real cameras and uploads (blur,
    # sensor noise, JPEG, occlusion) to `light`. Note that these overlap the suite's corruptions (as `light`'s
    # affine and jitter already overlap its crops, rotations and lighting).
    # Two routes: lfer_up96 made robust and then re-balanced, and v4 itself re-balanced further under `robust`.
    "lfer_up96_rob": ("lfer_up96", 10, [*VOTES96, *ROBUST_FT]),
    "lfer_up96_rob_bal": ("lfer_up96_rob", 8, [*VOTES96, *robust_rebalance(0.005)]),
    "lfer_up96_bal_rob": ("lfer_up96_bal", 8, [*VOTES96, *robust_rebalance(0.005)]),
    # The run directories above were lost with the machine again; v4's file survives. The input-size lever once
    # more (64 -> 96 px gave lfer_mix +2.0 points on valid): v4 at 128 px, where the last stage sees a 4x4 map
    # (~1.8x the cost of 96 px per epoch), under `robust`. Two routes, as for v4: v4's own re-balanced
    # recipe continued, and natural draws (accuracy first; bundle_recipe's tau then buys the rare classes back)
    "lfer_v4_128_bal": (V4, 8, [*VOTES128, *robust_rebalance(0.005)]),
    "lfer_v4_128": (V4, 10, [*VOTES128, *ROBUST_FT]),
    # v4's own lineage at 128 px: the accurate run re-balanced, so that bundle_recipe's weight interpolation
    # spans natural and balanced draws (v4 came out of lfer_up96 -> lfer_up96_bal this way)
    "lfer_v4_128_rebal": ("lfer_v4_128", 6, [*VOTES128, *robust_rebalance(0.005)]),
    # lfer_v4_128 continued on votes mixed half and half with the ensemble's distributions (distilling the
    # ensemble into one of its members), then re-balanced as lfer_v4_128 was
    "lfer_v4_128_ens": ("lfer_v4_128", 8, [*ENS, "--input-size", 128, *ROBUST_FT]),
    "lfer_v4_128_ens_rebal": ("lfer_v4_128_ens", 5, [*VOTES128, *robust_rebalance(0.005)]),
    # the from-scratch candidate lfer_ens96 made robust and re-balanced, as lfer_v4_128 and its re-balance were
    "lfer_ens96_rob": ("lfer_ens96", 8, [*VOTES96, *ROBUST_FT]),
    "lfer_ens96_rob_rebal": ("lfer_ens96_rob", 5, [*VOTES96, *robust_rebalance(0.005)]),
    # the same two steps at 128 px (the route from v4 to lfer_v4_128 and v5), run beside the 96 px ones;
    # shorter, as lfer_v4_128_ens and its re-balance peaked by epochs 4 and 2
    "lfer_ens96_128": ("lfer_ens96", 6, [*VOTES128, *ROBUST_FT]),
    "lfer_ens96_128_rebal": ("lfer_ens96_128", 4, [*VOTES128, *robust_rebalance(0.005)]),
    # At the operating point (issue 13's rare-class floors on the holdout) the lfer_ens96 lineage needs tau ~1.1
    # and lands 4-6 points below v6's (bundle_search.json), while lfer_v4_128, a natural fine-tune of the
    # re-balanced v4, reaches the floors at tau 0.75. The hypothesis: a re-balanced phase leaves features that
    # separate contempt, and a natural phase after it keeps them. Tested here: the re-balanced run continued
    # on natural draws, as lfer_v4_128_ens continued lfer_v4_128
    "lfer_ens96_128_rebal_ens": ("lfer_ens96_128_rebal", 6, [*ENS, "--input-size", 128, *ROBUST_FT]),
    # The re-balances at lr 0.005 (above) leave contempt at 0-8% recall on the holdout; v3 (lfer_mix_bal, the
    # start of v6's lineage) was re-balanced at lr 0.01 for 10 epochs and left every class at >= 48% on valid.
    # The same strength here, then natural draws again
    "lfer_ens96_128_bal": ("lfer_ens96_128", 8, [*VOTES128, *robust_rebalance(0.01)]),
    "lfer_ens96_128_bal_ens": ("lfer_ens96_128_bal", 6, [*ENS, "--input-size", 128, *ROBUST_FT]),
    # v6 is the interpolation of a natural run with its own weak re-balance (lfer_v4_128_ens and
    # lfer_v4_128_ens_rebal), deep in a lineage that began with a strong re-balance (v3): the same last step
    # here, so that bundle_recipe's alpha spans natural and re-balanced draws of this lineage too. Frozen
    # features re-trained with any head stay below v6 at the floors (head_retrain.json): the backbone has to move
    "lfer_ens96_128_bal_ens_rebal": ("lfer_ens96_128_bal_ens", 5, [*VOTES128, *robust_rebalance(0.005)]),
    # lfer_ens96_128_bal, interpolated with its natural base, came closest to v6 at the floors (83.07% against
    # 83.67% on the holdout), and natural draws after it lost contempt again within one epoch
    # (lfer_ens96_128_bal_ens). The same strong re-balance of the from-scratch 128 px run, the study's most
    # accurate base (85.31% on the holdout by epoch 34 of 60, against lfer_ens96_128's 84.75%)
    "lfer_ens128_bal": ("lfer_ens128", 8, [*VOTES128, *robust_rebalance(0.01)]),
    # v7's chain (strong re-balance, natural draws, weak re-balance: lfer_ens96_128_bal_ens_rebal reached the
    # floors at tau -0.5 with 84.43% on the holdout) from this more accurate base
    "lfer_ens128_bal_ens": ("lfer_ens128_bal", 6, [*ENS, "--input-size", 128, *ROBUST_FT]),
    "lfer_ens128_bal_ens_rebal": ("lfer_ens128_bal_ens", 5, [*VOTES128, *robust_rebalance(0.005)]),
    # lfer_ens128 (from scratch, 85.99% on the holdout at epoch 50 of 60) was lost with its machine, with every run
    # directory. v7's file survives: its chain once more from v7 itself (v7 ends a weak re-balance, so the next
    # step is natural draws), with v7 as the base that bundle_recipe's alpha interpolates toward. Two kinds of
    # natural targets side by side: crowd votes, and votes mixed with the ensemble of the bundled v5-v7
    "lfer_v7_nat": (V7, 4, [*VOTES128, *ROBUST_FT]),
    "lfer_v7_ens": (V7, 4, [*BENS, "--input-size", 128, *ROBUST_FT]),
    "lfer_v7_nat_rebal": ("lfer_v7_nat", 4, [*VOTES128, *robust_rebalance(0.005)]),
    "lfer_v7_ens_rebal": ("lfer_v7_ens", 4, [*VOTES128, *robust_rebalance(0.005)]),
}
_ARGS = {**COMPARE, **CANDIDATES, **{n: a for n, (_, _, a) in FINETUNES.items()}}
# what a run waits for follows from its --labels: one of LABEL_SETS (made by teacher_labels), or the teacher's
NEEDS_LABELS = {n: k for n, a in _ARGS.items() for k, (f, _, _) in LABEL_SETS.items() if f in a}
NEEDS_TEACHER = {n for n, a in _ARGS.items() if LABELS in a}


def base_weights(base: str | Path) -> Path:
    """The weights a fine-tune starts from: a run's best.pt, or a file (e.g. a bundled model)."""
    return base if isinstance(base, Path) else c.WS / "runs" / EXP / base / "best.pt"


def hardware(device: str) -> str:
    """What a run was made on, for the result JSON."""
    cores = os.cpu_count()
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)}, {cores} CPU cores"
    return f"{platform.processor() or platform.machine()} CPU, {cores} cores"


def _device_args(device: str, workers: int) -> list[Any]:
    return ["--device", device, "--workers", workers]


def run(name: str, seed: int, epochs: int, args: Sequence[Any], device: str, workers: int) -> dict[str, Any]:
    """Train (or resume, or skip) one run of the study and score it on FERPlus valid."""
    dest = RESULTS / f"{name}.json"
    with c.exclusive(f"{EXP}-{name}"):
        done = c.read_result(dest)
        if done is not None:
            return done
        run_dir = c.WS / "runs" / EXP / name
        logfile = c.WS / "logs" / EXP / f"{name}.log"
        cmd = ["train", c.MANIFEST8, "--config", PROTOCOL, "--seed", seed, "--epochs", epochs, "--out", run_dir,
               *args, *EXTRA, "--json"]
        if (run_dir / "last.pt").is_file():
            cmd.append("--resume")
        t0 = time.time()
        summary = c.fer(*cmd, *_device_args(device, workers), logfile=logfile)
        if summary.get("stopped_at_step") is not None:
            raise RuntimeError(f"{run_dir}: stopped early; rerun to resume")
        result = {
            "experiment": EXP, "run": name, "seed": seed, "epochs": epochs,
            "command": "fer " + " ".join(_rel(a) for a in cmd if a != "--json"),
            "protocol": PROTOCOL.relative_to(c.ROOT).as_posix(),
            "device": device, "hardware": hardware(device), "workers": workers,
            "train": {k: summary[k] for k in ("targets", "epochs_run", "best_epoch", "best_val_acc", "history",
                                              "notes")},
            "train_seconds": round(sum(r["seconds"] for r in summary["history"]), 1),
            "wall_seconds": round(time.time() - t0, 1),
            **c.evaluate(run_dir / "best.pt", run_dir, logfile),
        }
        c.write_result(dest, result)
        c.log.info("%s: holdout %.4f, FERPlus valid %.4f (8), %s", name, result["train"]["best_val_acc"],
                   result["ferplus_valid_8"]["accuracy"], hardware(device))
        return result


def teacher(epochs: int, device: str, workers: int) -> dict[str, Any]:
    """The recipe's ResNet-18 teacher and its label distributions on train."""
    dest = RESULTS / "teacher.json"
    with c.exclusive(f"{EXP}-teacher"):
        done = c.read_result(dest)
        if done is not None and LABELS.is_file():
            return done
        logfile = c.WS / "logs" / EXP / "teacher.log"
        cmd = ["pretrain-teacher", c.MANIFEST8, "--config", PROTOCOL, "--seed", 0, "--epochs", epochs,
               "--out", TEACHER_DIR, *EXTRA, "--json"]
        if (TEACHER_DIR / "last.pt").is_file():
            cmd.append("--resume")
        t0 = time.time()
        summary = c.fer(*cmd, *_device_args(device, workers), logfile=logfile)
        labels = c.fer("gen-labels", c.MANIFEST8, "--teacher", TEACHER_DIR / "best.pt", "--out", LABELS,
                       "--device", device, "--json", logfile=logfile)
        result = done or {
            "experiment": EXP, "run": "teacher-resnet18", "epochs": epochs,
            "command": "fer " + " ".join(_rel(a) for a in cmd if a != "--json"),
            "device": device, "hardware": hardware(device), "workers": workers,
            "train": {k: summary[k] for k in ("epochs_run", "best_epoch", "best_val_acc", "history")},
            "train_seconds": round(sum(r["seconds"] for r in summary["history"]), 1),
            "wall_seconds": round(time.time() - t0, 1),
            "gen_labels": labels,
            **c.evaluate(TEACHER_DIR / "best.pt", TEACHER_DIR, logfile),
        }
        c.write_result(dest, result)
        return result


def adopt_teacher(src: Path) -> dict[str, Any]:
    """Record a teacher trained on another machine (experiments/gpu/run_recipe.sh --only teacher).

    ``src`` holds what that run brought back: ``teacher_fp16.pt`` (its best.pt, exported with
    ``fer export --format checkpoint --half``), ``metrics.csv``, and the label distributions
    ``recipe-teacher-resnet18.parquet`` that `fer gen-labels` made there. Because a manifest's identity
    is its content, labels made from the same FERPlus elsewhere are fresh here. The teacher is scored
    here, and teacher.json says where it was trained.
    """
    import csv
    import shutil

    import torch

    TEACHER_DIR.mkdir(parents=True, exist_ok=True)
    LABELS.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "teacher_fp16.pt", TEACHER_DIR / "best.pt")
    shutil.copyfile(src / "metrics.csv", TEACHER_DIR / "metrics.csv")
    shutil.copyfile(src / LABELS.name, LABELS)
    ckpt = torch.load(TEACHER_DIR / "best.pt", weights_only=True)
    source = ckpt.get("source_provenance") or {}
    with open(TEACHER_DIR / "metrics.csv") as f:
        history = [{k: float(v) if k != "epoch" else int(v) for k, v in row.items()} for row in csv.DictReader(f)]
    best = max(history, key=lambda r: r["val_acc"])
    from fercli.schema import read_artifact_meta

    labels_meta = read_artifact_meta(LABELS)
    result = {
        "experiment": EXP, "run": "teacher-resnet18", "epochs": len(history),
        "command": source.get("command"), "device": "cuda", "hardware": src.joinpath("hardware.txt").read_text().strip()
        if (src / "hardware.txt").is_file() else "GPU machine (device tool)",
        "trained_elsewhere": "experiments/gpu/run_recipe.sh --only teacher; weights kept as fp16",
        "train": {"epochs_run": len(history), "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
                  "history": history},
        "train_seconds": round(sum(r["seconds"] for r in history), 1),
        "gen_labels": {"rows": None, **labels_meta.get("quality", {})},
        **c.evaluate(TEACHER_DIR / "best.pt", TEACHER_DIR, c.WS / "logs" / EXP / "teacher.log"),
    }
    c.write_result(RESULTS / "teacher.json", result)
    return result


def teacher_labels(key: str, device: str) -> dict[str, Any]:
    """The label distributions LABEL_SETS[key] on train (``fer gen-labels --flip``), made once."""
    out, result_name, teachers = LABEL_SETS[key]
    dest = RESULTS / result_name
    with c.exclusive(f"{EXP}-{key}"):
        done = c.read_result(dest)
        if done is not None and out.is_file():
            return done
        ckpts = [t if isinstance(t, Path) else c.WS / "runs" / EXP / t / "best.pt" for t in teachers]
        missing = [p for p in ckpts if not p.is_file()]
        if missing:
            gone = missing[0]
            raise RuntimeError(f"no {gone}: " + (f"delete {RESULTS / gone.parent.name}.json if that run finished "
                                                 "on another machine, and rerun `recipe.py --only finetune`"
                                                 if gone.name == "best.pt" else "restore the bundled file from git"))
        ens = [a for p in ckpts[1:] for a in ("--ensemble", p)]
        cmd = ["gen-labels", c.MANIFEST8, "--teacher", ckpts[0], *ens, "--out", out, "--flip", "--device", device]
        summary = c.fer(*cmd, "--json", logfile=c.WS / "logs" / EXP / f"{key}.log")
        summary["out"] = _rel(out)  # not this machine's path
        result = {"experiment": EXP, "run": key, "teacher": [_rel(p) if isinstance(t, Path) else f"{EXP}/{t}"
                                                             for t, p in zip(teachers, ckpts)],
                  "command": "fer " + " ".join(_rel(a) for a in cmd), "gen_labels": summary}
        c.write_result(dest, result)
        return result


def _label_needs(key: str, groups: set[str]) -> tuple[str, ...]:
    """The study's runs a label set's teachers come from, when they run in this invocation too."""
    runs = {t for t in LABEL_SETS[key][2] if isinstance(t, str)}
    return tuple(sorted(r for r in runs if (r in FINETUNES and "finetune" in groups)
                        or (r in CANDIDATES and "candidates" in groups)))


def _existing_teacher() -> dict[str, Any]:
    done = c.read_result(RESULTS / "teacher.json")
    if done is None or not LABELS.is_file():
        raise RuntimeError(f"no teacher labels at {LABELS}: run `experiments/recipe.py --only teacher` first")
    return done


def _rel(a: Any) -> str:
    """Paths in recorded commands relative to the workspace, so JSONs do not depend on the machine."""
    if isinstance(a, Path):
        try:
            return a.relative_to(c.WS).as_posix()
        except ValueError:
            return a.relative_to(c.ROOT).as_posix() if a.is_relative_to(c.ROOT) else a.name
    return str(a)


def tasks(groups: set[str], seeds: list[int], compare_epochs: int, candidate_epochs: int, teacher_epochs: int,
          device: str, workers: dict[str, int], runs: set[str] | None = None) -> list[c.Task]:
    """The study's tasks for ``groups``; with ``runs``, only those runs of the groups and, transitively, the tasks
    they wait for (label sets, the teacher, base runs: a finished one only reads its result JSON)."""
    out = _tasks(groups, seeds, compare_epochs, candidate_epochs, teacher_epochs, device, workers)
    if runs is None:
        return out
    unknown = runs - {t.name for t in out}
    if unknown:
        raise SystemExit(f"--runs: no run {', '.join(sorted(unknown))} in --only {','.join(sorted(groups))}")
    needs = {t.name: set(t.needs) for t in out}
    keep, grow = set(), set(runs)
    while grow:  # the closure of what the named runs wait for (a finished run's task just reads its JSON)
        keep |= grow
        grow = set().union(*(needs[n] for n in grow)) - keep
    return [t for t in out if t.name in keep]


def _tasks(groups: set[str], seeds: list[int], compare_epochs: int, candidate_epochs: int, teacher_epochs: int,
           device: str, workers: dict[str, int]) -> list[c.Task]:
    out: list[c.Task] = []
    if "teacher" in groups:
        out.append(c.Task("teacher", lambda: teacher(teacher_epochs, device, workers["teacher"])))
    else:  # runs that need the teacher wait for a `--only teacher` run (e.g. on a GPU machine) to make it
        out.append(c.Task("teacher", _existing_teacher))
    # label sets are made only for runs still to do (a finished run's teachers may be gone from disk)
    todo = [n for n in (*(CANDIDATES if "candidates" in groups else ()), *(FINETUNES if "finetune" in groups else ()))
            if c.read_result(RESULTS / f"{n}.json") is None]
    for key in dict.fromkeys(NEEDS_LABELS[n] for n in todo if n in NEEDS_LABELS):
        out.append(c.Task(key, lambda k=key: teacher_labels(k, device), _label_needs(key, groups)))

    def needs_of(name: str) -> tuple[str, ...]:
        return ("teacher",) if name in NEEDS_TEACHER else (NEEDS_LABELS[name],) if name in NEEDS_LABELS and \
            name in todo else ()

    if "candidates" in groups:  # the longest runs first, so they are not left for last
        for name, args in CANDIDATES.items():
            out.append(c.Task(name, lambda n=name, a=args: run(n, 0, candidate_epochs, a, device, workers["candidate"]),
                              needs_of(name)))
    if "finetune" in groups:
        for name, (base, epochs, args) in FINETUNES.items():
            init = ["--init", base_weights(base)]
            needs = needs_of(name)
            if isinstance(base, str) and (base in FINETUNES or "candidates" in groups):
                needs += (base,)  # a fine-tune of a fine-tune (or of a candidate run now) waits for it
            out.append(c.Task(name, lambda n=name, e=epochs, a=[*init, *args]: run(n, 0, e, a, device,
                                                                                 workers["candidate"]), needs))
    if "compare" in groups:
        for seed in seeds:
            for name, args in COMPARE.items():
                run_name = f"{name}-s{seed}"
                out.append(c.Task(run_name, lambda n=run_name, a=args, s=seed: run(n, s, compare_epochs, a, device,
                                                                                   workers["compare"]),
                                  ("teacher",) if name in NEEDS_TEACHER else ()))
    return out


def main() -> None:
    p = c.parser(__doc__)
    p.add_argument("--only", default="teacher,compare,candidates", help="groups to run (comma-separated)")
    p.add_argument("--seeds", default="0,1", help="seeds of the comparison (default 0,1)")
    p.add_argument("--compare-epochs", type=int, default=20, help="the comparison's shared budget (default 20)")
    p.add_argument("--candidate-epochs", type=int, default=60, help="epochs of the bundled-model candidates")
    p.add_argument("--teacher-epochs", type=int, default=30, help="epochs of the teacher (default 30)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--workers", default="0,0,0",
                   help="augmentation worker processes per run: teacher,candidate,compare (default 0,0,0)")
    p.add_argument("--adopt-teacher", type=Path, help="record a teacher trained elsewhere (see adopt_teacher)")
    p.add_argument("--runs", default="", help="only these runs of the groups (comma-separated), e.g. "
                   "lfer_v7_nat,lfer_v7_nat_rebal")
    p.add_argument("--extra", default="", help="extra options for every training command, e.g. '--limit 500'")
    opts = p.parse_args()
    EXTRA.extend(opts.extra.split())
    c.setup_logging()
    c.ensure_dataset()
    if opts.adopt_teacher:
        r = adopt_teacher(opts.adopt_teacher)
        c.log.info("teacher: FERPlus valid %.4f (8)", r["ferplus_valid_8"]["accuracy"])
        return
    w = [int(v) for v in opts.workers.split(",")]
    workers = {"teacher": w[0], "candidate": w[1], "compare": w[2]}
    groups = {g.strip() for g in opts.only.split(",") if g.strip()}
    seeds = [int(s) for s in opts.seeds.split(",")]
    runs = {r.strip() for r in opts.runs.split(",") if r.strip()} or None
    done = c.run_tasks(tasks(groups, seeds, opts.compare_epochs, opts.candidate_epochs, opts.teacher_epochs,
                             opts.device, workers, runs), opts.jobs)
    for name, r in done.items():
        if "ferplus_valid_8" in r:  # not the label-making tasks (self-labels)
            c.log.info("%s: FERPlus valid %.4f (8)", name, r["ferplus_valid_8"]["accuracy"])


if __name__ == "__main__":
    main()
