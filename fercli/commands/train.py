"""`fer pretrain-teacher` and `fer train`: one training engine, two stage configs.

Both commands share one table of options (:data:`OPTIONS`); each command's signature is built from
the rows that apply to it, so the two cannot drift apart.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config
from fercli.schema import BEST_CHECKPOINT, LAST_CHECKPOINT, TRAIN_STATE_KEY

# fercli.training.RECIPES's names (a test checks they agree), spelled out so `--help` imports no torch.
RECIPE_NAMES = ("paper", "rafdb", "affectnet", "ferplus-cpu")

# name -> (annotation: type and typer option, used by the teacher command too)
OPTIONS: dict[str, tuple[Any, bool]] = {
    "labels": (_o.option(Path, "--labels", help="Label distributions from `fer gen-labels` \\[default: the workspace's]."), False),
    "out": (_o.option(Path, "--out", "-o", help="Run directory \\[default: WORKSPACE/student]."), True),
    "arch": (_o.option(str, "--arch", help="Registered model (lfer, lfer_head, shufflenet_v2, resnet18, resnet50)."), True),
    "pretrained": (_o.option(str, "--pretrained", help="Initialise from 'imagenet' weights in torch's hub cache."), True),
    "init": (_o.option(Path, "--init", help="Initialise from a compatible checkpoint."), True),
    "input_size": (_o.option(int, "--input-size", help="Training resolution, a multiple of 16 (paper: 224)."), True),
    "recipe": (_o.option(str, "--recipe", help=f"Preset: {', '.join(RECIPE_NAMES)}."), True),
    "epochs": (_o.option(int, "--epochs", help="Epochs (paper: 120)."), True),
    "batch_size": (_o.option(int, "--batch-size", "-b", help="Batch size per process."), True),
    "lr": (_o.option(float, "--lr", help="SGD learning rate (paper: 0.01)."), True),
    "momentum": (_o.option(float, "--momentum", help="SGD momentum (0.9)."), True),
    "weight_decay": (_o.option(float, "--weight-decay", help="Weight decay (1e-4)."), True),
    "nesterov": (_o.option(bool, "--nesterov/--no-nesterov", help="Nesterov momentum."), True),
    "sched": (_o.option(str, "--sched", help="Learning-rate schedule: step or cosine (per iteration)."), True),
    "lr_step": (_o.option(int, "--lr-step", help="--sched step: multiply the lr by --lr-gamma every this many epochs."), True),
    "lr_gamma": (_o.option(float, "--lr-gamma", help="Step decay factor (0.1)."), True),
    "warmup_epochs": (_o.option(float, "--warmup-epochs", help="Linear warm-up from 1% of --lr over this many epochs (0: none)."), True),
    "balance": (_o.option(str, "--balance", help="Rare classes: none, sampler (class-balanced draws), sqrt (draws in proportion to the square root of each class's count) or logit-adjust (Menon et al. 2021)."), True),
    "tau": (_o.option(float, "--tau", help="--balance logit-adjust: strength (1.0)."), True),
    "augment": (_o.option(str, "--augment", help="Augmentation preset: paper (flip + --shift), light, strong, or robust (light + blur, sensor noise, JPEG, erasing)."), True),
    "auto_augment": (_o.option(str, "--auto-augment", help="Automatic policy on top: none, trivialwide or randaugment."), True),
    "mix": (_o.option(str, "--mix", help="none, mixup, cutmix or both (targets mix with the images)."), True),
    "mix_alpha": (_o.option(float, "--mix-alpha", help="MixUp's Beta(alpha, alpha) (0.2)."), True),
    "flip": (_o.option(float, "--flip", help="Horizontal flip probability (0.5)."), True),
    "shift": (_o.option(float, "--shift", help="--augment paper: random translation up to this fraction of the input size (0: off, as in the paper)."), True),
    "label_smoothing": (_o.option(float, "--label-smoothing", help="Label smoothing of the single-label loss (0)."), True),
    "ema": (_o.option(float, "--ema", help="Keep an EMA of the weights with this decay (e.g. 0.999); it is validated, saved and exported."), True),
    "select": (_o.option(str, "--select", help="Best checkpoint by holdout acc or mean-class accuracy."), True),
    "calibrate": (_o.option(bool, "--calibrate/--no-calibrate", help="Fit a temperature on the holdout after training; stored in best.pt."), True),
    "loss": (_o.option(str, "--loss", help="combo (eq. 6) or ce, on the single labels."), False),
    "alpha": (_o.option(float, "--alpha", help="Combo loss: weight of the weighted CE vs Dice (0.5)."), False),
    "beta": (_o.option(float, "--beta", help="Combo loss: FP/FN balance (0.2; 0.6 for AffectNet)."), False),
    "kl_weight": (_o.option(float, "--kl-weight", help="Weight of KL(P || Q) (eq. 5)."), False),
    "kl_reduction": (_o.option(str, "--kl-reduction", help="paper (/ N x C) or batchmean (/ N)."), False),
    "targets": (_o.option(str, "--targets", help="auto, teacher (labels file), votes (manifest dist_*), mix (both), none."), False),
    "target_mix": (_o.option(float, "--target-mix", help="--targets mix: weight of the crowd votes (0.5)."), False),
    "val_fraction": (_o.option(float, "--val-fraction", help="Hold out this stratified fraction of train when there is no valid split."), True),
    "limit": (_o.option(int, "--limit", help="Train on a stratified subset of this many images."), True),
    "seed": (_o.option(int, "--seed", help="Seed for initialisation, order and augmentation."), True),
    "deterministic": (_o.option(bool, "--deterministic/--no-deterministic", help="Deterministic algorithms only."), True),
    "workers": (_o.Workers, True),
    "cache": (_o.option(bool, "--cache/--no-cache", help="Decode images once into a memory-mapped cache."), True),
    "device": (_o.Device, True),
    "threads": (_o.option(int, "--threads", help="CPU threads for torch."), True),
    "checkpoint_every": (_o.option(int, "--checkpoint-every", help="Steps between resumable checkpoints."), True),
    "max_steps": (_o.option(int, "--max-steps", help="Stop (resumably) after this many steps."), True),
    "resume": (_o.option(bool, "--resume", help="Continue the run in --out exactly where it stopped."), True),
    "overwrite": (_o.option(bool, "--overwrite", help="Start again even if --out holds a run."), True),
}

TRAIN_EXAMPLE = """Examples:

  fer train --beta 0.2                                   # LFER-LDL in the workspace: dataset + labels found there

  fer train data/manifest.parquet --labels labels/labels.parquet --arch lfer --recipe rafdb

  fer train --targets votes --input-size 64 --epochs 30  # FERPlus crowd votes instead of a teacher

  fer train --recipe ferplus-cpu                         # the strong small-face recipe (cosine, EMA, strong aug)

  fer train --augment strong --sched cosine --warmup-epochs 2 --ema 0.999 --balance logit-adjust --tau 0.5

  torchrun --nproc_per_node=2 -m fercli train --epochs 1  # DistributedDataParallel (gloo on CPU, nccl on CUDA)
"""
TEACHER_EXAMPLE = """Examples:

  fer pretrain-teacher                                   # ResNet-50 on the workspace's dataset

  fer pretrain-teacher --arch resnet18 --input-size 64 --epochs 20 --out teacher/
"""


def _run(ctx: typer.Context, kind: str, manifest: Optional[Path], config: Optional[Path], json_out: bool,
         **opts: Any) -> None:
    from fercli.training.config import RECIPES, TeacherConfig, TrainConfig  # light: the engine (torch) comes after validation

    ws = _ui.state(ctx).workspace
    cls = TeacherConfig if kind == "teacher" else TrainConfig
    section = "pretrain-teacher" if kind == "teacher" else "train"
    overrides = {"manifest": manifest, **opts}
    # A first pass finds the recipe; its values sit below every explicit setting, and the final
    # config is validated as a whole (an unknown recipe is refused there).
    first = build_config(cls, section, overrides, ws, config, validate=False)
    base = RECIPES.get(first.recipe, {}) if first.recipe is not None else None
    cfg = build_config(cls, section, overrides, ws, config, base=base)
    done = _finished_run(cfg, ws, kind)
    if done is not None:  # the same command again: nothing to train
        _report_finished(ctx, ws, kind, done, json_out)
        return
    from fercli.training import run_train

    progress = _ui.RichTrainProgress()
    try:
        result = run_train(cfg, ws, kind=kind, track=_ui.rich_track, progress=progress,
                     command="fer " + " ".join(sys.argv[1:]),
                     on_inputs=_ui.announcer(ctx, ws))
    finally:
        progress.close()
    if result.rank != 0:
        return
    summary = result.summary()
    if json_out:
        _ui.print_json(summary)
        return
    for note in result.notes:
        _ui.say(ctx, note)
    table = Table(title=f"{kind} {cfg.arch}: {ws.rel(result.out_dir)}")
    for col in ("epoch", "lr", "train loss", "train acc", "valid loss", "valid acc", "mean-class acc", "img/s"):
        table.add_column(col, justify="right")
    for r in result.history:
        mark = " *" if result.best_row and r["epoch"] == result.best_row["epoch"] else ""
        table.add_row(f"{r['epoch']}{mark}", f"{r['lr']:.2g}", f"{r['train_loss']:.4f}", f"{r['train_acc']:.4f}",
                      f"{r['val_loss']:.4f}", f"{r['val_acc']:.4f}", f"{r['val_mean_class_acc']:.4f}",
                      f"{r['images_per_s']:,.0f}")
    _ui.out.print(table)
    if result.stopped_at_step is not None:
        _ui.out.print(f"stopped after {result.stopped_at_step} steps (--max-steps); continue with --resume")
    elif result.best_row:
        _ui.out.print(f"best valid accuracy {result.best_row['val_acc']:.4f} at epoch {result.best_row['epoch']} (* above); "
                      f"wrote {ws.rel(result.best)}, metrics.csv and curves.png; it is now the workspace's {kind}")


# Settings that do not change what a run learns (or name its inputs, which are compared by sha256).
_NOT_SETTINGS = frozenset({"manifest", "labels", "out", "workers", "cache", "device", "threads", "checkpoint_every",
                           "max_steps", "resume", "overwrite", "amp", "channels_last"})


def _finished_run(cfg: Any, ws: Any, kind: str) -> dict[str, Any] | None:
    """The run directory's state when it holds a *finished* run of exactly these settings on exactly
    these inputs (so `fer train` typed again has nothing to do), else None (run_train() then resumes,
    overwrites or refuses as asked)."""
    from fercli.config_file import config_dict
    from fercli.errors import FerError
    from fercli.schema import read_artifact_meta

    out_dir = Path(cfg.out) if cfg.out is not None else ws.default_path(kind).parent
    best, last = out_dir / BEST_CHECKPOINT, out_dir / LAST_CHECKPOINT
    if cfg.resume or cfg.overwrite or not (best.is_file() and last.is_file()):
        return None
    try:
        meta, best_meta = read_artifact_meta(last), read_artifact_meta(best)
    except FerError:
        return None  # run_train() says what is wrong with it
    state = meta.get(TRAIN_STATE_KEY) or {}
    history = state.get("history") or []
    if len(history) < cfg.epochs or state.get("step", 0) != 0:
        return None  # stopped early: --resume continues it
    saved = meta.get("config") or {}
    for key, value in config_dict(cfg).items():
        if key in _NOT_SETTINGS or (key == "targets" and value == "auto"):
            continue
        if saved.get(key) != value:
            return None
    if cfg.calibrate and "calibration" not in (best_meta.get("metrics") or {}):
        return None  # calibration did not run
    # The same inputs (by content), resolved as run_train() would resolve them.
    roles: dict[str, Any] = {"dataset": cfg.manifest}
    if kind == "student" and cfg.targets in ("auto", "teacher", "mix") and (
            cfg.labels is not None or ws.current_path("labels") is not None):
        roles["labels"] = cfg.labels
    recorded = (meta.get("provenance") or {}).get("inputs") or {}
    if set(roles) != {r for r in recorded if r in ("dataset", "labels")}:
        return None
    for role, explicit in roles.items():
        path = Path(explicit) if explicit is not None else ws.current_path(role)
        if path is None or not path.is_file():
            return None
        if (recorded[role] or {}).get("sha256") not in (ws.sha256(path), ws.file_sha256(path)):
            return None
    best_row = (best_meta.get("metrics") or {}).get("best") or {}
    return {"out": str(out_dir), "best": str(best), "targets": saved.get("targets"), "epochs_run": len(history),
            "best_epoch": best_row.get("epoch"), "best_val_acc": best_row.get("val_acc"), "stopped_at_step": None,
            "notes": [], "history": history, "up_to_date": True}


def _report_finished(ctx: typer.Context, ws: Any, kind: str, summary: dict[str, Any], json_out: bool) -> None:
    best = Path(summary["best"])
    ws.record(kind, best)
    message = (f"{ws.rel(best)} is up to date: a finished {summary['epochs_run']}-epoch run with these settings on these "
               f"inputs; nothing to train (--overwrite trains again); it is the workspace's {kind}")
    summary["notes"] = [message]
    if json_out:
        _ui.print_json(summary)
    else:
        _ui.out.print(message)


def _command(kind: str, doc: str):
    """Build the command function for ``kind`` with the option rows that apply to it."""

    def command(ctx: typer.Context, manifest: Optional[Path] = None, config: Optional[Path] = None,
                json_out: bool = False, **opts: Any) -> None:
        _run(ctx, kind, manifest, config, json_out, **opts)

    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("manifest", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=_o.Manifest, default=None),
    ]
    for name, (annotation, for_teacher) in OPTIONS.items():
        if name == "out" and kind == "teacher":
            annotation = _o.option(Path, "--out", "-o", help="Run directory \\[default: WORKSPACE/teacher].")
        if kind == "student" or for_teacher:
            params.append(inspect.Parameter(name, keyword, annotation=annotation, default=None))
    params += [
        inspect.Parameter("config", keyword, annotation=Optional[Path],
                          default=typer.Option(None, "--config", help="TOML/YAML file with these options.")),
        inspect.Parameter("json_out", keyword, annotation=bool, default=_o.json_flag("run summary")),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command


train = _command("student", "Train the LFER-LDL student: KL to the teacher's distributions + combo loss (eq. 5-6).\n\n"
                 "With no paths, uses the workspace's dataset and label distributions and writes student/.")
pretrain_teacher = _command("teacher", "Train the teacher (ResNet-50 by default) with cross-entropy on the single labels.\n\n"
                            "With no paths, uses the workspace's dataset and writes teacher/.")
