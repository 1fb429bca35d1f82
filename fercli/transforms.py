"""Named preprocessing presets shared by training, evaluation, prediction and export.

One definition of "what a model sees" lives here: the input size, the normalisation (ImageNet
mean/std, as torchvision's pre-trained weights expect) and how a decoded image becomes a tensor.
Checkpoints and exported models store the same three numbers (``input_size``, ``mean``, ``std``),
so a deployed model is fed exactly like the one that was evaluated.

Presets are looked up by name in :data:`PRESETS`, which holds one: ``eval``, used by every stage
(training included: its random augmentation runs on uint8 faces before this normalisation, see
:mod:`fercli.augment`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercli.choices import DEFAULT_INPUT_SIZE, SIZE_MULTIPLE, check_input_size  # noqa: F401  (declared light)
from fercli.errors import FerError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes a model input: resize to ``input_size`` square, scale to [0, 1], normalise."""

    name: str
    input_size: int = DEFAULT_INPUT_SIZE
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        """The fields stored in checkpoints and export metadata."""
        return {"input_size": self.input_size, "mean": list(self.mean), "std": list(self.std)}

    def __call__(self, image: np.ndarray, bgr: bool = False) -> torch.Tensor:
        """An HxWx3 (or HxW grayscale) uint8 image -> a normalised float32 tensor (3, S, S).

        ``bgr=True`` for images decoded by OpenCV. Faces are expected to be cropped and aligned
        already; the image is resized without keeping the aspect ratio, as alignment produces squares.
        """
        return self.batch([image], bgr=bgr)[0]

    def batch(self, images: Sequence[np.ndarray], bgr: bool = False) -> torch.Tensor:
        """Several images -> one normalised float32 batch (N, 3, S, S)."""
        s = self.input_size
        out = np.empty((len(images), s, s, 3), dtype=np.uint8)
        for i, img in enumerate(images):
            try:
                out[i] = to_rgb_uint8(img, s, bgr=bgr)
            except FerError as exc:
                raise FerError(f"image {i}: {exc}") from None
        return self.normalize(torch.from_numpy(out).permute(0, 3, 1, 2)).contiguous()

    def normalize(self, x: torch.Tensor, device: torch.device | str | None = None,
                  channels_last: bool = False) -> torch.Tensor:
        """A uint8 batch ``(N, 3, S, S)`` -> float32 scaled to [0, 1] and normalised with ``mean`` and
        ``std``, moved to ``device`` first when given; ``channels_last`` returns channels-last memory."""
        if device is not None:
            x = x.to(device, non_blocking=True)
        x = x.float().div_(255.0)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _eval_preset(input_size: int = DEFAULT_INPUT_SIZE, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> Preprocess:
    return Preprocess("eval", check_input_size(input_size), tuple(mean), tuple(std))  # type: ignore[arg-type]


# name -> builder(input_size, mean, std). Training augmentation is not a preset: fercli.augment
# transforms uint8 faces, which are then normalised like evaluation's.
PRESETS: dict[str, Callable[..., Preprocess]] = {"eval": _eval_preset}


def get_preset(name: str = "eval", **kw: Any) -> Preprocess:
    """A preprocessing preset by name, e.g. ``get_preset("eval", input_size=112)``."""
    if name not in PRESETS:
        raise FerError(f"unknown preprocessing preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name](**kw)


def preset_from_meta(meta: dict[str, Any], name: str = "eval") -> Preprocess:
    """The preset that matches a checkpoint's or export's stored ``input_size``, ``mean`` and ``std``."""
    return get_preset(name, input_size=int(meta["input_size"]), mean=meta["mean"], std=meta["std"])


def to_rgb_uint8(img: np.ndarray, size: int, bgr: bool = False) -> np.ndarray:
    """One image (HxW gray, HxWx1 or HxWx3) -> ``size`` x ``size`` x 3 uint8 RGB, resized as the presets do."""
    import cv2  # imported lazily: `fer --help` should not pay for OpenCV

    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise FerError(f"expected uint8 pixels, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim != 3 or img.shape[2] != 3:
        raise FerError(f"expected HxWx3 or HxW pixels, got shape {img.shape}")
    elif bgr:
        img = img[:, :, ::-1]
    if img.shape[:2] != (size, size):
        # INTER_AREA when shrinking avoids aliasing; bilinear when enlarging (e.g. 48 -> 224).
        shrink = img.shape[0] > size or img.shape[1] > size
        img = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """Read an aligned face image file -> ``size`` x ``size`` x 3 uint8 RGB; unreadable files are a FerError."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        hint = "the file is missing" if not Path(path).exists() else "the file is not a readable image"
        raise FerError(f"{path}: cannot decode ({hint}); check it with `fer data info` or re-run `fer align`")
    return to_rgb_uint8(img, size, bgr=True)
