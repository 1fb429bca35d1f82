"""The model registry: the LFER student, its ablation variants and the teachers.

``create_model(name, num_classes, **kw)`` builds any registered network (timm-style). The three
student variants are one class, :class:`ShuffleNetFER`, with different switches; it reuses
torchvision's ShuffleNetV2 blocks, so parameter names match torchvision's and ImageNet weights map
across by name.

=================  ==================================================================================
``shufflenet_v2``  torchvision's ShuffleNetV2 1.0x (Conv1 width 24) with a ``num_classes`` linear head
``lfer_head``      + the Mish depthwise-separable output module (:class:`MishDWSHead`)
``lfer``           + Conv1 width 29 and the PDWRes branch (:class:`PDWRes`): the paper's student
``resnet18``       torchvision ResNet-18 (a teacher for small machines)
``resnet50``       torchvision ResNet-50 (the paper's teacher)
=================  ==================================================================================

Every network accepts square inputs whose side is a multiple of 16 (see
:func:`fercli.transforms.check_input_size`). Initialisation: ``pretrained="imagenet"`` maps
torchvision's ImageNet weights into the network and ``init=PATH`` loads any compatible checkpoint;
both return an :class:`InitReport` saying which tensors were loaded, widened or re-initialised.

Layout: :mod:`~fercli.models.shufflenet_fer` (the student family and its blocks),
:mod:`~fercli.models.resnet` (the teachers), :mod:`~fercli.models.registry` (names, specs,
builder arguments), :mod:`~fercli.models.init` (weight loading) and :mod:`~fercli.models.factory`
(:func:`create_model`, :func:`build_model`). Everything public is re-exported here.
"""

from __future__ import annotations

from fercli.models.factory import build_model, create_model
from fercli.models.init import (
    InitReport,
    imagenet_weights_file,
    init_from_checkpoint,
    load_imagenet_state,
    load_matching,
    load_state_source,
)
from fercli.models.registry import ModelSpec, get_spec, list_models, model_args, register_model
from fercli.models.resnet import resnet
from fercli.models.shufflenet_fer import (
    STAGE_CHANNELS,
    STAGE_REPEATS,
    LinearHead,
    MishDWSHead,
    PDWRes,
    PooledBatchNorm,
    PooledDepthwise,
    ShuffleNetFER,
)

__all__ = [
    "STAGE_CHANNELS", "STAGE_REPEATS", "InitReport", "LinearHead", "MishDWSHead", "ModelSpec", "PDWRes",
    "PooledBatchNorm", "PooledDepthwise", "ShuffleNetFER", "build_model", "create_model", "get_spec",
    "imagenet_weights_file", "init_from_checkpoint", "list_models", "load_imagenet_state", "load_matching",
    "load_state_source", "model_args", "register_model", "resnet",
]
