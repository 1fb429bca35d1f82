"""Training augmentation: named presets built from ``torchvision.transforms.v2``, applied per face.

A v2 transform called on a batched tensor draws *one* set of random parameters for the whole batch
(every face would get the same crop and jitter), so :func:`augment_batch` calls the preset once per
face. All randomness comes from torch's generator, re-seeded for every batch from
``(seed, epoch, step)`` inside :func:`torch.random.fork_rng`: a batch's augmentation does not depend on
worker count, on other batches, or on where a run was resumed, which keeps ``--resume`` bit-exact.

Presets (``--augment``):

* ``paper``: horizontal flip (``--flip``) and, with ``--shift``, a random translation: what the paper
  describes (plus the shift the CPU study needed, see experiments/protocol.toml).
* ``light``: flip, affine (rotation 10 degrees, scale 0.9-1.1, shift 10%), brightness/contrast 0.3.
* ``strong``: flip, random resized crop (scale 0.6-1, so faces come looser or tighter than the
  dataset's crops, as real detections do), rotation 15 degrees, brightness/contrast 0.4, occasional
  blur or JPEG, grayscale, and random erasing (occlusion).
* ``robust``: ``light``'s geometry and lighting, then the degradations of real cameras and uploads:
  blur, sensor noise (one noise plane for a gray face, as a gray sensor makes), JPEG, and occlusion.
  For fine-tuning a model that is already accurate on clean crops (the bundled model): ``strong``'s
  crops and erasing from scratch cost the small students accuracy (docs/RESULTS.md).

``--auto-augment trivialwide|randaugment`` inserts an automatic policy before erasing;
``--mix mixup|cutmix|both`` mixes images and targets across the batch (:func:`mix_batch`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2

from fercli.choices import AUGMENT_PRESETS, AUTO_AUGMENT, MIX_MODES  # noqa: F401  (declared light, for the configs)
from fercli.errors import FerError


class RandomGaussianNoise(v2.Transform):
    """Additive Gaussian noise with a standard deviation drawn per face from ``sigma`` (fractions of the
    pixel range), via ``v2.functional.gaussian_noise``. A gray face (three equal channels) gets one noise
    plane, so it stays gray: per-channel noise would show a gray-trained model colour it never sees."""

    def __init__(self, sigma: tuple[float, float]) -> None:
        super().__init__()
        self.sigma = sigma

    def make_params(self, flat_inputs: list) -> dict:
        return {"sigma": float(torch.empty(()).uniform_(*self.sigma))}

    def transform(self, inpt: torch.Tensor, params: dict) -> torch.Tensor:
        gray = bool((inpt[..., :1, :, :] == inpt).all())
        src = inpt[..., :1, :, :] if gray else inpt
        out = v2.functional.gaussian_noise(src, sigma=params["sigma"])
        return out.expand_as(inpt).clone() if gray else out


def build_augment(preset: str, size: int, flip: float = 0.5, shift: float = 0.0,
                  auto: str = "none") -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-face transform of ``preset`` for uint8 ``(3, size, size)`` tensors."""
    if preset not in AUGMENT_PRESETS:
        raise FerError(f"unknown augmentation preset {preset!r}; choose one of {', '.join(AUGMENT_PRESETS)}")
    if auto not in AUTO_AUGMENT:
        raise FerError(f"unknown --auto-augment {auto!r}; choose one of {', '.join(AUTO_AUGMENT)}")
    ops: list[Callable] = []
    if preset == "paper":
        if shift > 0:
            ops.append(v2.RandomAffine(degrees=0, translate=(shift, shift)))
    elif preset in ("light", "robust"):
        ops += [v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                v2.ColorJitter(brightness=0.3, contrast=0.3)]
        if preset == "robust":  # in the order a camera and an upload apply them
            ops += [v2.RandomApply([v2.GaussianBlur(9, sigma=(0.1, 3.0))], p=0.25),
                    v2.RandomApply([RandomGaussianNoise((0.02, 0.2))], p=0.3),
                    v2.RandomApply([v2.JPEG((15, 90))], p=0.2),
                    v2.RandomErasing(p=0.25, scale=(0.02, 0.15), value=0)]
    else:  # strong
        ops += [v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.85, 1.15), antialias=True),
                v2.RandomAffine(degrees=15),
                v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.3),
                v2.RandomGrayscale(p=0.1),
                # real photos are softer and more compressed than the training crops
                v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.2),
                v2.RandomApply([v2.JPEG((20, 90))], p=0.2)]
    if flip > 0:
        ops.insert(0, v2.RandomHorizontalFlip(flip))
    if auto == "trivialwide":
        ops.append(v2.TrivialAugmentWide())
    elif auto == "randaugment":
        ops.append(v2.RandAugment())
    if preset == "strong":
        ops.append(v2.RandomErasing(p=0.5, scale=(0.02, 0.2), value=0))
    return v2.Compose(ops) if ops else (lambda x: x)


def augment_batch(x: torch.Tensor, transform: Callable[[torch.Tensor], torch.Tensor], seed: int) -> torch.Tensor:
    """``transform`` applied to each face of a uint8 batch ``(B, 3, S, S)``, with randomness from ``seed``.

    Per-face calls give each face its own parameters; the global RNG is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.stack([transform(img) for img in x])


def mix_batch(x: torch.Tensor, mode: str, alpha: float, seed: int) -> torch.Tensor:
    """The mixing matrix ``M`` (B, B) of a MixUp/CutMix draw, after mixing ``x`` (float, B x 3 x S x S) in place.

    Row ``i`` of ``M`` says how much of each face image ``i`` now holds, so any per-sample target
    (class one-hots, teacher distributions, crowd votes) mixes the same way: ``M @ targets``. It is
    obtained from torchvision's own ``MixUp``/``CutMix`` by passing the sample indices as labels.
    """
    b = x.shape[0]
    mixes = {"mixup": [v2.MixUp(alpha=alpha, num_classes=b)], "cutmix": [v2.CutMix(alpha=1.0, num_classes=b)]}
    mixes["both"] = mixes["mixup"] + mixes["cutmix"]
    if mode not in mixes:
        raise FerError(f"unknown --mix {mode!r}; choose one of {', '.join(MIX_MODES)}")
    op = v2.RandomChoice(mixes[mode]) if len(mixes[mode]) > 1 else mixes[mode][0]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mixed, m = op(x, torch.arange(b, device=x.device))
    x.copy_(mixed)
    return m.to(torch.float32)


__all__ = ["AUGMENT_PRESETS", "AUTO_AUGMENT", "MIX_MODES", "RandomGaussianNoise", "augment_batch", "build_augment",
           "mix_batch"]
