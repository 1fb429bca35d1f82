"""The choices and defaults that stage configs need from fercli's heavy modules, declared here, light.

A stage config is built and validated (:func:`fercli.config.build_config`) before its stage is imported,
so a bad option is one line without paying for torch, OpenCV or pandas. What the configs and their
validators need from the modules that import those (the registered model names, the augmentation
presets, the loss options, the input-size rule, the test-time augmentations, the ONNX runtimes, the
loader options, the image and video suffixes) is declared here once; those modules import it from here
and re-export it under their own names (``fercli.augment.AUGMENT_PRESETS`` etc. keep working).

This module imports nothing from fercli but :mod:`fercli.errors`, and no third-party package.
"""

from __future__ import annotations

from dataclasses import dataclass

from fercli.errors import FerError

# fercli.models.registry registers exactly these, in this order (list_models(); a test checks they agree).
MODEL_NAMES = ("shufflenet_v2", "lfer_head", "lfer", "resnet18", "resnet50")

# fercli.augment: --augment, --auto-augment and --mix.
AUGMENT_PRESETS = ("paper", "light", "strong", "robust")
AUTO_AUGMENT = ("none", "trivialwide", "randaugment")
MIX_MODES = ("none", "mixup", "cutmix", "both")

# fercli.probability: test-time augmentation: none, or the mean with the mirrored face.
TTA_MODES = ("none", "flip")

# fercli.export_core: what runs an exported .onnx file in fer eval / predict / bench.
RUNTIMES = ("onnxruntime", "openvino")

# fercli.importers.base: what the importers take for an image and what fer predict treats as a video.
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})


@dataclass(frozen=True)
class LossConfig:
    """What the training loss is made of (see :mod:`fercli.losses`)."""

    loss: str = "combo"  # combo (eq. 6) or ce (plain cross-entropy) on the single labels
    alpha: float = 0.5
    beta: float = 0.2  # the paper's best on RAF-DB (0.6 on AffectNet-7)
    dice_eps: float = 1.0
    kl_weight: float = 1.0  # weight of eq. 5; only used when target distributions are given
    kl_reduction: str = "paper"
    label_smoothing: float = 0.0  # on the single-label part (CE, or the combo loss's one-hots)
    tau: float = 0.0  # logit adjustment (Menon et al. 2021): train on logits + tau * log(prior)


LOSSES = ("combo", "ce")
KL_REDUCTIONS = ("paper", "batchmean")

# fercli.transforms: the input size.
DEFAULT_INPUT_SIZE = 224  # the paper's input size

# Every network accepts sizes that are a multiple of this (see check_input_size for why).
SIZE_MULTIPLE = 16


def check_input_size(size: int, where: str = "input size") -> int:
    """Return ``size`` if every registered model accepts it, else raise :class:`FerError`.

    The LFER student splits the 1/4-resolution map F1 into four quadrants whose stride-2 outputs
    must tile the 1/8-resolution Stage2 map exactly, so ``size / 8`` must be even: ``size`` must be
    a multiple of 16 (48, 64, 96, 112, 224, ...). All models share the rule so that ablations and
    teachers always run at the same sizes.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
        raise FerError(
            f"{where} {size!r} is not supported: use a multiple of {SIZE_MULTIPLE} such as 48, 64, 96, 112 or 224 "
            "(the PDWRes quadrants must tile the 1/8-resolution Stage2 map)"
        )
    return size


@dataclass(kw_only=True)
class LoaderOptions:
    """The options every stage that runs a model over a manifest's images shares (a config base class,
    :mod:`fercli.data`)."""

    batch_size: int = 128
    workers: int = 2  # decoding / augmentation worker processes
    cache: bool = True  # use the decoded cache (see fercli.data)
    device: str = "auto"
