"""The model registry: every network fercli builds, by name, with its fixed arguments.

A :class:`ModelSpec` holds the builder, its registry defaults, the role (student or teacher) and
where its torchvision ImageNet weights come from. Checkpoints store the registry name and the
complete builder arguments (:func:`model_args`), so a model rebuilds from the file alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from fercli.errors import FerError
from fercli.models.resnet import resnet
from fercli.models.shufflenet_fer import ShuffleNetFER


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: its builder, fixed arguments and where its ImageNet weights come from."""

    name: str
    builder: Callable[..., nn.Module]
    defaults: dict[str, Any]
    description: str
    role: str  # "student" or "teacher"
    imagenet: str  # torchvision weights enum member, e.g. "ResNet50_Weights.IMAGENET1K_V2"
    # our parameter-name prefix -> torchvision's, for tensors that moved (the classifier)
    aliases: dict[str, str] = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], description: str, role: str,
                   imagenet: str, aliases: dict[str, str] | None = None, **defaults: Any) -> None:
    """Register ``builder(num_classes, **defaults, **overrides)`` under ``name``."""
    _REGISTRY[name] = ModelSpec(name, builder, dict(defaults), description, role, imagenet, dict(aliases or {}))


def list_models(role: str | None = None) -> list[str]:
    """Registered model names, optionally only students or teachers."""
    return [n for n, s in _REGISTRY.items() if role is None or s.role == role]


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``; unknown names are a :class:`FerError` listing the known ones."""
    if name not in _REGISTRY:
        raise FerError(f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def model_args(name: str, num_classes: int, **overrides: Any) -> dict[str, Any]:
    """The complete keyword arguments that rebuild ``name`` (stored in checkpoints as ``model_args``).

    Storing the resolved arguments, not just the name, keeps old checkpoints loadable if a
    registry default changes later.
    """
    spec = get_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise FerError(f"{name}: num_classes must be an integer >= 2, got {num_classes!r}")
    unknown = set(overrides) - set(spec.defaults)
    if unknown:
        raise FerError(f"{name}: unknown model argument(s) {', '.join(sorted(unknown))}; "
                       f"known: {', '.join(sorted(spec.defaults)) or 'none'}")
    return {"num_classes": num_classes, **spec.defaults, **overrides}


# ---- the built-in models (registration order is the order list_models() and help texts show) ----
# The three students are one class with different switches; each adds one change of the paper.
_SHUFFLE_IMAGENET = "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1"
_SHUFFLE_ALIASES = {"head.fc.": "fc."}
register_model("shufflenet_v2", ShuffleNetFER, "ShuffleNetV2 1.0x baseline (torchvision, Conv1 24)", "student",
               _SHUFFLE_IMAGENET, _SHUFFLE_ALIASES, stem_channels=24, head="linear", pdwres=False, head_hidden=22)
register_model("lfer_head", ShuffleNetFER, "baseline + Mish depthwise-separable output module", "student",
               _SHUFFLE_IMAGENET, _SHUFFLE_ALIASES, stem_channels=24, head="mish", pdwres=False, head_hidden=22)
register_model("lfer", ShuffleNetFER, "LFER student: + Conv1 29 and PDWRes (the paper's model)", "student",
               _SHUFFLE_IMAGENET, _SHUFFLE_ALIASES, stem_channels=29, head="mish", pdwres=True, head_hidden=22)
register_model("resnet18", resnet, "ResNet-18 teacher (for small machines)", "teacher",
               "ResNet18_Weights.IMAGENET1K_V1", depth=18)
register_model("resnet50", resnet, "ResNet-50 teacher (the paper's)", "teacher",
               "ResNet50_Weights.IMAGENET1K_V2", depth=50)
