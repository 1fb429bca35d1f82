"""One classifier interface over a checkpoint, an ONNX export or a TorchScript export.

`fer eval` and `fer predict` both go through :class:`Classifier`, so a face gets the same
preprocessing (the preset stored with the model) and the same probabilities whichever command, and
whichever backend, produced them. Probabilities are ``softmax(logits / T)`` with the model's stored
temperature ``T`` (1 when it has none; :mod:`fercli.probability`), for checkpoints and exports alike.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercli.errors import FerError
from fercli.fileio import sha256_file
from fercli.probability import DEFAULT_TEMPERATURE, DEFAULT_TTA, mean_softmax, model_temperature, model_tta, tta_probs, tta_views
from fercli.schema import read_artifact_meta
from fercli.transforms import Preprocess, preset_from_meta
from fercli.workspace import Artifact, Workspace

EXPORT_SUFFIXES = (".onnx", ".torchscript", ".ts")
BUNDLED_MODEL = Path(__file__).resolve().parent / "weights" / "ferplus8_lfer_v8_fp16.pt"  # docs/MODEL_CARD.md
BUNDLED_ENV = "FER_BUNDLED_MODEL"  # another file to use instead, or "none" to never fall back to one


_OFF = ("", "none", "0", "off")


def _bundled_off(env: str | None) -> bool:
    return env is not None and env.strip().lower() in _OFF


def bundled_model() -> Path | None:
    """The packaged default model (docs/MODEL_CARD.md), or ``$FER_BUNDLED_MODEL``; None if absent or disabled."""
    env = os.environ.get(BUNDLED_ENV)
    if _bundled_off(env):
        return None
    path = Path(env) if env else BUNDLED_MODEL
    return path if path.is_file() else None


def bundled_status() -> str:
    """Which bundled model is in use, or why there is none (for messages)."""
    env = os.environ.get(BUNDLED_ENV)
    path = bundled_model()
    if path is not None:
        return str(path)
    return f"${BUNDLED_ENV} is {env!r}" if _bundled_off(env) else f"{env or BUNDLED_MODEL} is missing"


def _reason(exc: FerError, path: Path) -> str:
    """An error's text without the path it starts with (the caller names the file its own way)."""
    text = str(exc)
    for prefix in (f"{path}: ", f"{path.name}: "):
        if text.startswith(prefix):
            return text[len(prefix):]
    return text


NO_MODEL = "no model: pass --model CKPT (a checkpoint or an export), or train one in this workspace with `fer train`"


def resolve_model(ws: Workspace, explicit: str | os.PathLike[str] | None = None) -> Artifact:
    """The model `fer eval` and `fer predict` use: ``explicit`` (--model) if given, else the
    workspace's student, else the bundled FERPlus model, so a bare install can predict offline.

    A file that is tried and cannot be used (truncated, not a fercli checkpoint, refused because it
    holds pickled code) is one error saying which file, where it came from and what is wrong with it,
    never "no model"."""
    if explicit is not None:
        return ws.resolve("student", explicit)
    current = ws.current_path("student")
    if current is not None:
        try:
            return ws.resolve("student", None)
        except FerError as exc:
            raise FerError(
                f"the workspace's student {ws.rel(current)} cannot be used: {_reason(exc, current)}; retrain it "
                "(`fer train --overwrite`), pass --model FILE, or move it away to fall back to the bundled model"
            ) from None
    env = os.environ.get(BUNDLED_ENV)
    bundled = bundled_model()
    if bundled is None:
        raise FerError(f"{NO_MODEL} (no bundled model either: {bundled_status()})")
    origin = f"${BUNDLED_ENV} names {bundled}, which" if env else f"the bundled model {bundled}"
    try:
        meta = read_artifact_meta(bundled)
    except FerError as exc:
        fix = (f"point ${BUNDLED_ENV} at a fercli checkpoint or export, or set {BUNDLED_ENV}=none" if env
               else "reinstall fercli")
        raise FerError(f"{origin} cannot be used: {_reason(exc, bundled)}; {fix}, or pass --model FILE") from None
    return Artifact("student", bundled, meta, implicit=False, bundled=True)


@dataclass
class Classifier:
    """A loaded expression classifier: its classes, its preprocessing, its calibration and a batch forward."""

    path: Path
    kind: str  # checkpoint, onnx, torchscript
    arch: str
    classes: tuple[str, ...]
    preprocess: Preprocess
    device: torch.device
    _model: Any = None
    _session: Any = None
    temperature: float = DEFAULT_TEMPERATURE  # probs() = softmax(logits / temperature)
    tta: str = DEFAULT_TTA  # the model's recommended test-time augmentation (the --tta default)

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: torch.device | str = "cpu", threads: int | None = None,
             runtime: str = "onnxruntime") -> Classifier:
        """Load a fercli checkpoint (student or teacher) or an export made by `fer export` (an .onnx
        file runs on ``runtime``: onnxruntime, or openvino when installed)."""
        path = Path(path)
        device = torch.device(device)
        if runtime not in ("onnxruntime", "openvino"):
            raise FerError(f"--runtime {runtime!r} is not one of onnxruntime, openvino")
        if runtime != "onnxruntime" and path.suffix.lower() != ".onnx":
            raise FerError(f"{path}: the {runtime} runtime runs exported .onnx files only (fer export)")
        if path.suffix.lower() in EXPORT_SUFFIXES:
            from fercli.export import read_export_meta, runtime_session

            meta = read_export_meta(path)
            pre = preset_from_meta(meta)
            # Exports older than calibration have neither key: plain softmax, no TTA.
            calib = {"temperature": model_temperature(meta, str(path)), "tta": model_tta(meta, str(path))}
            if path.suffix.lower() == ".onnx":
                session = runtime_session(path, runtime, threads=threads, device=device.type)
                return cls(path, "onnx", meta.get("arch", "?"), tuple(meta["classes"]), pre, device, _session=session,
                           **calib)
            with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not the user's concern
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location=device).eval()
            return cls(path, "torchscript", meta.get("arch", "?"), tuple(meta["classes"]), pre, device, _model=model,
                       **calib)
        from fercli.checkpoint import model_from_checkpoint

        model, ckpt = model_from_checkpoint(path)  # load_checkpoint has checked temperature and tta
        return cls(path, "checkpoint", ckpt["arch"], tuple(ckpt["classes"]), preset_from_meta(ckpt), device,
                   _model=model.to(device).eval(), temperature=model_temperature(ckpt, str(path)),
                   tta=model_tta(ckpt, str(path)))

    @property
    def sha256(self) -> str:
        return sha256_file(self.path)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> np.ndarray:
        """Raw logits (N, C) for a normalised float batch (N, 3, S, S); the temperature is not applied."""
        if self._session is not None:
            name = self._session.get_inputs()[0].name
            return self._session.run(None, {name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return self._model(x.to(self.device)).float().cpu().numpy()

    def view_logits(self, x: torch.Tensor, tta_flip: bool = False) -> list[np.ndarray]:
        """Raw logits of each test-time view: the batch, and with ``tta_flip`` also its mirror."""
        return tta_views(self.logits, x, tta_flip)

    def probs_from_logits(self, views: Sequence[np.ndarray], temperature: float | None = None) -> np.ndarray:
        """The mean over ``views`` of ``softmax(logits / T)`` (float64), T = the model's temperature
        unless given (``temperature=1.0`` gives the uncalibrated probabilities)."""
        return mean_softmax(views, self.temperature if temperature is None else temperature)

    def probs(self, x: torch.Tensor, tta_flip: bool = False) -> np.ndarray:
        """Calibrated probabilities (N, C) in float64: ``softmax(logits / temperature)``; ``tta_flip``
        averages them with the mirrored batch's."""
        return tta_probs(self.logits, x, self.temperature, tta_flip)


def class_mapping(model_classes: tuple[str, ...], data_classes: tuple[str, ...], allow_map: bool, model_name: str,
                  data_name: str) -> tuple[list[int], list[int]] | None:
    """How to compare a model's outputs with a dataset's labels when their class lists differ.

    Returns None when the lists are equal. With ``allow_map`` and one list a subset of the other,
    returns (model output columns to keep, dataset classes scored), both in dataset order; anything
    else is a :class:`FerError`.
    """
    if tuple(model_classes) == tuple(data_classes):
        return None
    subset = set(data_classes) <= set(model_classes) or set(model_classes) <= set(data_classes)
    if not allow_map or not subset:
        fix = ("pass --map to score on the classes they share" if subset
               else "the class lists are not subsets of each other; use a model trained on this class list")
        raise FerError(f"class lists differ: {model_name} has {len(model_classes)} classes ({', '.join(model_classes)}), "
                       f"{data_name} has {len(data_classes)} ({', '.join(data_classes)}); {fix}")
    shared = [c for c in data_classes if c in model_classes]
    return [model_classes.index(c) for c in shared], [data_classes.index(c) for c in shared]
