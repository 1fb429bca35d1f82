"""Self-describing checkpoints: a model rebuilds from the file alone.

A checkpoint is ``torch.save`` of a plain dict with the keys :data:`fercli.schema.CHECKPOINT_KEYS`
(:mod:`fercli.schema.checkpoint` defines the format and its keys; this module fills and checks them):
the registry name (``arch``) and complete builder arguments (``model_args``), the class list, the
preprocessing (``input_size``, ``mean``, ``std``), the weights, the stage config, metrics, library
versions and provenance. Two optional keys say how to read the outputs: ``temperature`` (the
calibrated softmax temperature, 1.0 when absent; see :mod:`fercli.calibration`) and ``tta`` (the
recommended test-time augmentation, ``none`` or ``flip``; ``none`` when absent). Only tensors,
numbers, strings, lists and dicts are stored, so it loads with ``torch.load(weights_only=True)``;
a file that needs pickled code to load is refused.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from fercli import __version__
from fercli.probability import DEFAULT_TEMPERATURE, DEFAULT_TTA, check_temperature, check_tta, model_temperature, model_tta
from fercli.errors import FerError
from fercli.fileio import atomic_path, safe_torch_load
from fercli.models import get_spec
from fercli.schema import CHECKPOINT_FORMAT, CHECKPOINT_KEYS, SCHEMA_VERSION, make_provenance
from fercli.transforms import DEFAULT_INPUT_SIZE, IMAGENET_MEAN, IMAGENET_STD, check_input_size


def library_versions() -> dict[str, str]:
    """Versions recorded in checkpoints and exports."""
    return {"fercli": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def make_checkpoint(
    model: nn.Module,
    arch: str,
    model_args: dict[str, Any],
    classes: Sequence[str],
    input_size: int = DEFAULT_INPUT_SIZE,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    provenance: dict[str, Any] | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    tta: str = DEFAULT_TTA,
) -> dict[str, Any]:
    """The checkpoint dict for ``model`` (weights copied to CPU); see the module docstring."""
    get_spec(arch)
    check_input_size(input_size)
    temperature = check_temperature(temperature, f"{arch} checkpoint")
    tta = check_tta(tta, f"{arch} checkpoint")
    if int(model_args.get("num_classes", -1)) != len(classes):
        raise FerError(f"{arch}: model_args has num_classes={model_args.get('num_classes')} but {len(classes)} classes were given")
    return {
        "format": CHECKPOINT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "arch": arch,
        "model_args": dict(model_args),
        "classes": list(classes),
        "input_size": int(input_size),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "config": config or {},
        "metrics": metrics or {},
        "versions": library_versions(),
        "provenance": provenance or make_provenance("checkpoint", summary={"arch": arch}),
        "temperature": temperature,
        "tta": tta,
    }


def save_checkpoint(path: str | os.PathLike[str], ckpt: dict[str, Any]) -> Path:
    """Write a checkpoint atomically (the previous file survives a crash)."""
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}; build it with make_checkpoint")
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a fercli checkpoint (weights included), with a clear error for anything else."""
    path = Path(path)
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise FerError(f"{path}: not a fercli checkpoint (no format={CHECKPOINT_FORMAT!r} entry); "
                       "make one with fercli, or pass it to --init to load its weights by name")
    version = ckpt.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise FerError(f"{path}: checkpoint schema version {version!r} is newer than this fercli reads "
                       f"({SCHEMA_VERSION}); upgrade fercli (pip install -U fercli)")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise FerError(f"{path}: incomplete fercli checkpoint, missing {', '.join(missing)}; re-save it with this fercli")
    if not isinstance(ckpt["state_dict"], dict) or not isinstance(ckpt["model_args"], dict):
        raise FerError(f"{path}: damaged checkpoint (state_dict and model_args must be dicts); re-save it")
    try:
        get_spec(ckpt["arch"])
    except FerError as exc:
        raise FerError(f"{path}: {exc}; it was probably made by another fercli version") from None
    check_input_size(ckpt["input_size"], where=f"{path}: input_size")
    if len(ckpt["classes"]) != ckpt["model_args"].get("num_classes"):
        raise FerError(f"{path}: {len(ckpt['classes'])} classes but model_args.num_classes="
                       f"{ckpt['model_args'].get('num_classes')}; the checkpoint is inconsistent, re-save it")
    model_temperature(ckpt, str(path))
    model_tta(ckpt, str(path))
    return ckpt


def model_from_checkpoint(path_or_ckpt: str | os.PathLike[str] | dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes, load its weights, and return (model in eval mode, checkpoint).

    Weights that do not fit the described architecture (missing or unexpected names, other shapes)
    are a :class:`FerError` listing the first mismatches.
    """
    if isinstance(path_or_ckpt, dict):
        ckpt, where = path_or_ckpt, "checkpoint"
    else:
        ckpt, where = load_checkpoint(path_or_ckpt), str(path_or_ckpt)
    arch, args = ckpt["arch"], dict(ckpt["model_args"])
    try:
        model = get_spec(arch).builder(**args)
    except (TypeError, FerError) as exc:
        raise FerError(f"{where}: cannot rebuild {arch} from model_args {args} ({exc}); "
                       "it was made by an incompatible fercli version") from None
    state = ckpt["state_dict"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                parts.append(f"{label} {', '.join(items[:3])}" + (f" (+{len(items) - 3} more)" if len(items) > 3 else ""))
        raise FerError(f"{where}: weights do not fit {arch} {args}: {'; '.join(parts)}; the checkpoint is "
                       "incompatible with this fercli (use --init to load the tensors that fit)")
    model.load_state_dict(state)
    return model.eval(), ckpt


def checkpoint_summary(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Key figures of a checkpoint for tables: arch, classes, input size, parameter count."""
    params = sum(v.numel() for k, v in ckpt["state_dict"].items()
                 if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    return {"arch": ckpt["arch"], "classes": len(ckpt["classes"]), "input_size": ckpt["input_size"], "params": params}
