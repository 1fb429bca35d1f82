"""Initialising a network from other weights: torchvision's ImageNet weights or any checkpoint.

:func:`load_matching` copies every tensor that fits, by name, widening where the network grew
(Conv1 24 -> 29 channels), and returns an :class:`InitReport` saying which tensors were loaded,
widened or re-initialised. ``fer train --pretrained imagenet`` goes through
:func:`load_imagenet_state`, ``--init PATH`` through :func:`init_from_checkpoint`.

This module reads checkpoint files itself (:func:`load_state_source`) rather than through
:mod:`fercli.checkpoint`, which builds on the registry: the models package never imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from fercli.errors import FerError
from fercli.fileio import safe_torch_load
from fercli.models.registry import get_spec
from fercli.schema import CHECKPOINT_FORMAT


@dataclass
class InitReport:
    """What an initialisation did to each tensor of the model."""

    source: str
    loaded: list[str] = field(default_factory=list)
    widened: list[str] = field(default_factory=list)  # "name: source shape -> model shape"
    reinitialised: list[str] = field(default_factory=list)  # "name (reason)"
    unused: list[str] = field(default_factory=list)  # source tensors nothing took

    def summary(self) -> str:
        """One line for logs and CLI output."""
        def names(items: list[str]) -> str:
            shown = ", ".join(items[:6])
            return shown + (f", ... ({len(items) - 6} more)" if len(items) > 6 else "")
        parts = [f"from {self.source}: loaded {len(self.loaded)} tensors"]
        if self.widened:
            parts.append(f"widened {len(self.widened)} ({names(self.widened)})")
        if self.reinitialised:
            parts.append(f"re-initialised {len(self.reinitialised)} ({names(self.reinitialised)})")
        if self.unused:
            parts.append(f"{len(self.unused)} source tensors unused")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "loaded": self.loaded, "widened": self.widened,
                "reinitialised": self.reinitialised, "unused": self.unused}


def load_matching(model: nn.Module, state: dict[str, Tensor], source: str,
                  aliases: dict[str, str] | None = None) -> InitReport:
    """Copy every tensor of ``state`` that fits into ``model``, by name; report what happened.

    Same name and shape: loaded. A source tensor smaller than the model's in some dimensions
    (Conv1 widened from 24 to 29 channels, and the Stage2 weights that read it): the overlapping
    block is copied, new output channels keep their fresh initialisation and new *input* channels
    get zero weights, so the widened network computes what the source network did until training
    moves it. Anything else (new modules, a classifier with another class count) stays freshly
    initialised and is listed as re-initialised.
    """
    report = InitReport(source)
    aliases = aliases or {}
    target = model.state_dict()
    used: set[str] = set()
    new_state: dict[str, Tensor] = {}
    for name, tensor in target.items():
        src_name = name if name in state else next(
            (src + name[len(ours):] for ours, src in aliases.items() if name.startswith(ours)), None)
        if src_name is None or src_name not in state:
            report.reinitialised.append(f"{name} (not in source)")
            continue
        src = state[src_name]
        if not isinstance(src, Tensor):
            report.reinitialised.append(f"{name} (source entry is not a tensor)")
            continue
        used.add(src_name)
        if src.shape == tensor.shape:
            new_state[name] = src.to(tensor.dtype)
            report.loaded.append(name)
        elif src.dim() == tensor.dim() and src.dim() > 0 and all(s <= t for s, t in zip(src.shape, tensor.shape)):
            widened = tensor.clone()
            if tensor.dim() >= 2 and src.shape[1] < tensor.shape[1]:
                widened[:, src.shape[1]:] = 0  # new input channels contribute nothing at first
            widened[tuple(slice(0, s) for s in src.shape)] = src.to(tensor.dtype)
            new_state[name] = widened
            report.widened.append(f"{name}: {tuple(src.shape)} -> {tuple(tensor.shape)}")
        else:
            report.reinitialised.append(f"{name} (source {tuple(src.shape)}, model {tuple(tensor.shape)})")
    report.unused = [k for k in state if k not in used]
    model.load_state_dict(new_state, strict=False)
    return report


def imagenet_weights_file(name: str) -> tuple[str, str, Path]:
    """(download URL, file name, path in torch's hub cache) of ``name``'s torchvision ImageNet weights."""
    spec = get_spec(name)
    enum_name, member = spec.imagenet.split(".")
    weights = getattr(getattr(torchvision.models, enum_name), member)
    filename = Path(urlparse(weights.url).path).name
    return weights.url, filename, Path(torch.hub.get_dir()) / "checkpoints" / filename


def load_imagenet_state(name: str, download: bool = True) -> tuple[dict[str, Tensor], Path]:
    """torchvision's ImageNet state dict for ``name``: from the hub cache, else downloaded if allowed.

    Offline without the cached file this is a :class:`FerError` naming the file and where to put it.
    """
    url, filename, path = imagenet_weights_file(name)
    if not path.is_file():
        where = (f"place {filename} (from {url}) at {path}; torch's hub cache is $TORCH_HOME/hub, "
                 "default ~/.cache/torch/hub")
        if not download:
            raise FerError(f"ImageNet weights for {name} are not cached: {where}")
        try:
            torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True, weights_only=True)
        except Exception as exc:  # URLError, socket errors, hash mismatch: all mean "no usable file"
            path.unlink(missing_ok=True)
            raise FerError(f"could not download ImageNet weights for {name} ({' '.join(str(exc).split())[:120]}): "
                           f"{where}") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FerError(f"{path}: not a readable torchvision weights file ({' '.join(str(exc).split())[:120]}); "
                       f"delete it and place {filename} from {url} there") from exc
    if not isinstance(state, dict):
        raise FerError(f"{path}: expected a state dict of tensors; delete it and place {filename} from {url} there")
    return state, path


def load_state_source(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The weights in ``path``: a fercli checkpoint's state dict, or a plain state dict (e.g. torchvision's)."""
    path = Path(path)
    obj = safe_torch_load(path)
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        obj = obj.get("state_dict")
    elif isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]  # a common training-script layout
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise FerError(f"{path}: holds no state dict of tensors; pass a fercli checkpoint or a saved state_dict")
    return obj


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> InitReport:
    """Load the tensors of a fercli checkpoint (or a plain state dict) that fit ``model``."""
    state = load_state_source(path)
    # Checkpoints saved from nn.DataParallel prefix every name with "module.".
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    report = load_matching(model, state, str(path))
    if not report.loaded and not report.widened:
        raise FerError(f"{path}: no tensor fits this model ({type(model).__name__}); "
                       "is it a checkpoint of another architecture? pass a checkpoint of the same model")
    return report
