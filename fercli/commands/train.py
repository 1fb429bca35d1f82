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

from fercli.commands import _ui
from fercli.config import build_config

# fercli.training.RECIPES's names (a test checks they agree), spelled out so `--help` imports no torch.
RECIPE_NAMES = ("paper", "rafdb", "affectnet", "ferplus-cpu")

# name -> (type, typer option, used by the teacher command too)
OPTIONS: dict[str, tuple[Any, Any, bool]] = {
    "labels": (Path, typer.Option(None, "--labels", help="Label distributions from `fer gen-labels` \\[default: the workspace's]."), False),
    "out": (Path, typer.Option(None, "--out", "-o", help="Run directory \\[default: WORKSPACE/student]."), True),
    "arch": (str, typer.Option(None, "--arch", help="Registered model (lfer, lfer_head, shufflenet_v2, resnet18, resnet50)."), True),
    "pretrained": (str, typer.Option(None, "--pretrained", help="Initialise from 'imagenet' weights in torch's hub cache."), True),
    "init": (Path, typer.Option(None, "--init", help="Initialise from a compatible checkpoint."), True),
    "input_size": (int, typer.Option(None, "--input-size", help="Training resolution, a multiple of 16 (paper: 224)."), True),
    "recipe": (str, typer.Option(None, "--recipe", help=f"Preset: {', '.join(RECIPE_NAMES)}."), True),
    "epochs": (int, typer.Option(None, "--epochs", help="Epochs (paper: 120)."), True),
    "batch_size": (int, typer.Option(None, "--batch-size", "-b", help="Batch size per process."), True),
    "lr": (float, typer.Option(None, "--lr", help="SGD learning rate (paper: 0.01)."), True),
    "momentum": (float, typer.Option(None, "--momentum", help="SGD momentum (0.9)."), True),
    "weight_decay": (float, typer.Option(None, "--weight-decay", help="Weight decay (1e-4)."), True),
    "nesterov": (bool, typer.Option(None, "--nesterov/--no-nesterov", help="Nesterov momentum."), True),
    "sched": (str, typer.Option(None, "--sched", help="Learning-rate schedule: step or cosine (per iteration)."), True),
    "lr_step": (int, typer.Option(None, "--lr-step", help="--sched step: multiply the lr by --lr-gamma every this many epochs."), True),
    "lr_gamma": (float, typer.Option(None, "--lr-gamma", help="Step decay factor (0.1)."), True),
    "warmup_epochs": (float, typer.Option(None, "--warmup-epochs", help="Linear warm-up from 1% of --lr over this many epochs (0: none)."), True),
    "balance": (str, typer.Option(None, "--balance", help="Rare classes: none, sampler (class-balanced draws) or logit-adjust (Menon et al. 2021)."), True),
    "tau": (float, typer.Option(None, "--tau", help="--balance logit-adjust: strength (1.0)."), True),
    "augment": (str, typer.Option(None, "--augment", help="Augmentation preset: paper (flip + --shift), light or strong."), True),
    "auto_augment": (str, typer.Option(None, "--auto-augment", help="Automatic policy on top: none, trivialwide or randaugment."), True),
    "mix": (str, typer.Option(None, "--mix", help="none, mixup, cutmix or both (targets mix with the images)."), True),
    "mix_alpha": (float, typer.Option(None, "--mix-alpha", help="MixUp's Beta(alpha, alpha) (0.2)."), True),
    "flip": (float, typer.Option(None, "--flip", help="Horizontal flip probability (0.5)."), True),
    "shift": (float, typer.Option(None, "--shift", help="--augment paper: random translation up to this fraction of the input size (0: off, as in the paper)."), True),
    "label_smoothing": (float, typer.Option(None, "--label-smoothing", help="Label smoothing of the single-label loss (0)."), True),
    "ema": (float, typer.Option(None, "--ema", help="Keep an EMA of the weights with this decay (e.g. 0.999); it is validated, saved and exported."), True),
    "select": (str, typer.Option(None, "--select", help="Best checkpoint by holdout acc or mean-class accuracy."), True),
    "calibrate": (bool, typer.Option(None, "--calibrate/--no-calibrate", help="Fit a temperature on the holdout after training; stored in best.pt."), True),
    "loss": (str, typer.Option(None, "--loss", help="combo (eq. 6) or ce, on the single labels."), False),
    "alpha": (float, typer.Option(None, "--alpha", help="Combo loss: weight of the weighted CE vs Dice (0.5)."), False),
    "beta": (float, typer.Option(None, "--beta", help="Combo loss: FP/FN balance (0.2; 0.6 for AffectNet)."), False),
    "kl_weight": (float, typer.Option(None, "--kl-weight", help="Weight of KL(P || Q) (eq. 5)."), False),
    "kl_reduction": (str, typer.Option(None, "--kl-reduction", help="paper (/ N x C) or batchmean (/ N)."), False),
    "targets": (str, typer.Option(None, "--targets", help="auto, teacher (labels file), votes (manifest dist_*), mix (both), none."), False),
    "target_mix": (float, typer.Option(None, "--target-mix", help="--targets mix: weight of the crowd votes (0.5)."), False),
    "val_fraction": (float, typer.Option(None, "--val-fraction", help="Hold out this stratified fraction of train when there is no valid split."), True),
    "limit": (int, typer.Option(None, "--limit", help="Train on a stratified subset of this many images."), True),
    "seed": (int, typer.Option(None, "--seed", help="Seed for initialisation, order and augmentation."), True),
    "deterministic": (bool, typer.Option(None, "--deterministic/--no-deterministic", help="Deterministic algorithms only."), True),
    "workers": (int, typer.Option(None, "--workers", help="Decoding worker processes."), True),
    "cache": (bool, typer.Option(None, "--cache/--no-cache", help="Decode images once into a memory-mapped cache."), True),
    "device": (str, typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."), True),
    "threads": (int, typer.Option(None, "--threads", help="CPU threads for torch."), True),
    "checkpoint_every": (int, typer.Option(None, "--checkpoint-every", help="Steps between resumable checkpoints."), True),
    "max_steps": (int, typer.Option(None, "--max-steps", help="Stop (resumably) after this many steps."), True),
    "resume": (bool, typer.Option(None, "--resume", help="Continue the run in --out exactly where it stopped."), True),
    "overwrite": (bool, typer.Option(None, "--overwrite", help="Start again even if --out holds a run."), True),
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
    from fercli.training import RECIPES, TeacherConfig, TrainConfig, run_train

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
    from fercli.config import config_dict
    from fercli.errors import FerError
    from fercli.schema import read_artifact_meta

    out_dir = Path(cfg.out) if cfg.out is not None else ws.default_path(kind).parent
    best, last = out_dir / "best.pt", out_dir / "last.pt"
    if cfg.resume or cfg.overwrite or not (best.is_file() and last.is_file()):
        return None
    try:
        meta, best_meta = read_artifact_meta(last), read_artifact_meta(best)
    except FerError:
        return None  # run_train() says what is wrong with it
    state = meta.get("train_state") or {}
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

    params = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter("manifest", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Optional[Path],
                          default=typer.Argument(None, help="Dataset manifest \\[default: the workspace's dataset].")),
    ]
    for name, (typ, option, for_teacher) in OPTIONS.items():
        if name == "out" and kind == "teacher":
            option = typer.Option(None, "--out", "-o", help="Run directory \\[default: WORKSPACE/teacher].")
        if kind == "student" or for_teacher:
            params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[typ], default=option))
    params += [
        inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--config", help="TOML/YAML file with these options.")),
        inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--json", help="Print the run summary as JSON.")),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__doc__ = doc
    return command


train = _command("student", "Train the LFER-LDL student: KL to the teacher's distributions + combo loss (eq. 5-6).\n\n"
                 "With no paths, uses the workspace's dataset and label distributions and writes student/.")
pretrain_teacher = _command("teacher", "Train the teacher (ResNet-50 by default) with cross-entropy on the single labels.\n\n"
                            "With no paths, uses the workspace's dataset and writes teacher/.")
