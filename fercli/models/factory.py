"""Building registered models: ``create_model(name, num_classes, **kw)`` (timm-style) and its report.

Both entry points resolve the complete builder arguments through the registry
(:func:`fercli.models.registry.model_args`), call the registered builder and, on request, load
ImageNet or checkpoint weights into it (:mod:`fercli.models.init`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from torch import nn

from fercli.errors import FerError
from fercli.models.init import InitReport, init_from_checkpoint, load_imagenet_state, load_matching
from fercli.models.registry import get_spec, model_args

log = logging.getLogger(__name__)


def create_model(name: str, num_classes: int, *, pretrained: str | None = None,
                 init: str | os.PathLike[str] | None = None, download: bool = True, **kw: Any) -> nn.Module:
    """Build a registered model, optionally initialised; see :func:`build_model` for the report."""
    model, report = build_model(name, num_classes, pretrained=pretrained, init=init, download=download, **kw)
    if report is not None:
        log.info("%s", report.summary())
    return model


def build_model(name: str, num_classes: int, *, pretrained: str | None = None,
                init: str | os.PathLike[str] | None = None, download: bool = True,
                **kw: Any) -> tuple[nn.Module, InitReport | None]:
    """Build ``name`` with ``num_classes`` outputs and return it with its initialisation report.

    ``pretrained="imagenet"`` maps torchvision's ImageNet weights in (from torch's hub cache, or
    downloaded when ``download`` is true); ``init`` loads a compatible checkpoint. Both may not be
    combined. The report is None for a randomly initialised model.
    """
    args = model_args(name, num_classes, **kw)
    spec = get_spec(name)
    model = spec.builder(**args)
    if pretrained is not None and init is not None:
        raise FerError("use either --pretrained or --init, not both")
    if pretrained is not None:
        if pretrained != "imagenet":
            raise FerError(f"unknown pretrained weights {pretrained!r}; the only choice is 'imagenet'")
        state, path = load_imagenet_state(name, download=download)
        return model, load_matching(model, state, f"ImageNet ({path})", spec.aliases)
    if init is not None:
        return model, init_from_checkpoint(model, init)
    return model, None
