"""The model registry: the LFER student, its ablation variants and the teachers.

``create_model(name, num_classes, **kw)`` builds any registered network (timm-style). The three
student variants are one private builder, :func:`_shufflenet_fer`, with different switches; they
reuse torchvision's ShuffleNetV2 blocks, so parameter names match torchvision's and ImageNet
weights map across by name.

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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from fercli.errors import FerError

log = logging.getLogger(__name__)

STAGE_CHANNELS = (116, 232, 464, 1024)  # ShuffleNetV2 1.0x Stage2, Stage3, Stage4, Conv5
STAGE_REPEATS = (4, 8, 4)


# ---- building blocks -------------------------------------------------------------------------
class PDWRes(nn.Module):
    """Parallel depthwise residual module (the paper's PDWRes), added to the Stage2 output.

    F1 (the map after Conv1 + max-pool, ``in_channels`` x H x W) is cut into four quadrants. Each
    quadrant goes through its own two 3x3 depthwise convolutions, each followed by BatchNorm and
    ReLU6: the first has stride 2 and channel multiplier ``out_channels / in_channels`` (29 -> 116),
    the second keeps 116 channels; both produce H/4 x W/4 maps, which is what Table 4's +0.01M
    params / +3.09M FLOPs implies. The four results are stitched back into an H/2 x W/2 map and
    added to Stage2's output.

    Why it is written this way (latency): four small convolutions on slices cost many tiny kernel
    launches plus the copies of slicing and stitching. Instead one reshape/permute copy moves the
    quadrants onto the channel axis (channel ``q * C + c`` is channel ``c`` of quadrant ``q``) and
    each stage runs as *one* grouped convolution over 4 x C channels. A depthwise convolution never
    mixes channels and zero-pads every channel on its own, so this is exactly four independent
    convolutions with separate weights per quadrant, each padded at its own border
    (tests/test_models.py checks it against a literal four-branch version). The branch runs in
    channels-last memory format. Stitching is two ``torch.cat`` calls on contiguous channel blocks,
    which measured 2.5x faster than adding through a 6-D permuted view. (Repeating the input
    channels to turn the first convolution into a plain depthwise one was tried: equal at batch 1,
    1.5x slower at batch 32.)
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels % in_channels:
            raise FerError(
                f"PDWRes needs Stage2 channels ({out_channels}) to be a multiple of Conv1 channels ({in_channels}); "
                "the paper uses Conv1 width 29 (116 = 4 x 29)"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        q_in, q_out = 4 * in_channels, 4 * out_channels
        self.branch = nn.Sequential(
            nn.Conv2d(q_in, q_out, 3, stride=2, padding=1, groups=q_in, bias=False),
            nn.BatchNorm2d(q_out),
            nn.ReLU6(inplace=True),
            nn.Conv2d(q_out, q_out, 3, stride=1, padding=1, groups=q_out, bias=False),
            nn.BatchNorm2d(q_out),
            nn.ReLU6(inplace=True),
        )

    def _quadrant_features(self, f1: Tensor) -> tuple[Tensor, ...]:
        """F1 (N, C, H, W) -> the four quadrants' branch outputs (top-left, top-right, bottom-left, bottom-right)."""
        if not (torch.jit.is_tracing() or torch.jit.is_scripting()) and (f1.shape[2] % 2 or f1.shape[3] % 2):
            raise FerError(f"PDWRes: F1 is {f1.shape[2]}x{f1.shape[3]}, which cannot be split into quadrants; "
                           "use an input size that is a multiple of 16")
        c, h, w = self.in_channels, f1.shape[2] // 2, f1.shape[3] // 2
        # (N, C, 2, h, 2, w) -> (N, 2, 2, C, h, w) -> (N, 4*C, h, w): quadrant (row, col) becomes a block of C channels.
        x = f1.reshape(-1, c, 2, h, 2, w).permute(0, 2, 4, 1, 3, 5).reshape(-1, 4 * c, h, w)
        # oneDNN's depthwise kernels are faster on channels-last data (the module measured 10% faster
        # at batch 1 and 43% at batch 32); ONNX ignores memory formats, so exports are unaffected.
        x = x.contiguous(memory_format=torch.channels_last)
        return self.branch(x).contiguous().chunk(4, dim=1)

    def branch_output(self, f1: Tensor) -> Tensor:
        """The stitched branch output alone (N, C', H/2, W/2), without the residual."""
        q = self._quadrant_features(f1)
        return torch.cat((torch.cat((q[0], q[1]), 3), torch.cat((q[2], q[3]), 3)), 2)

    def forward(self, f1: Tensor, stage2: Tensor) -> Tensor:
        """``stage2`` + the stitched branch output of ``f1``."""
        out = self.branch_output(f1)
        if not (torch.jit.is_tracing() or torch.jit.is_scripting()) and stage2.shape[2:] != out.shape[2:]:
            raise FerError(f"PDWRes: Stage2 map {tuple(stage2.shape[2:])} does not match the stitched quadrants "
                           f"{tuple(out.shape[2:])}; use an input size that is a multiple of 16")
        return stage2 + out


class PooledDepthwise(nn.Module):
    """A depthwise 1x1 convolution on a pooled (N, C, 1, 1) map, computed as one multiply-add.

    On a 1x1 map a depthwise 1x1 convolution is a per-channel scale and bias. Its parameters keep
    nn.Conv2d's shapes, (C, 1, 1, 1) and (C,), but it runs as ``addcmul``: oneDNN's grouped
    convolution with 1,024 groups on a 1x1 map took 3 ms on CPU, a third of the whole network,
    against 6 us for the multiply-add. Counted as C MACs per image by fercli.bench.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        ref = nn.Conv2d(channels, channels, 1, groups=channels, bias=True)  # nn.Conv2d's initialisation
        self.weight = nn.Parameter(ref.weight.detach().clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.bias.view(1, -1, 1, 1), x, self.weight.view(1, -1, 1, 1))


class LinearHead(nn.Module):
    """torchvision's classifier: global average pooling and one fully connected layer."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.mean((2, 3)))


class MishDWSHead(nn.Module):
    """The output module: a depthwise-separable pair with Mish instead of the fully connected layer.

    Layout (Fig. 2 is missing from the paper, so this is a reasoned choice): global average pooling,
    then a depthwise 1x1 convolution (per-channel scale and bias) + Mish, a pointwise convolution
    1024 -> ``hidden`` + BatchNorm + Mish, and a pointwise convolution ``hidden`` -> classes.
    It runs on the pooled 1x1 map because Table 4 allows only +0.02M params and +0.03M FLOPs: any
    depthwise 3x3 on the 7x7 Conv5 map would already cost 1024 x 9 x 49 = 0.45M MACs. With
    ``hidden = 22`` and 7 classes it adds 17,606 params and 16,538 MACs (+0.033M FLOPs) over the
    linear head. The BatchNorm matters: it removes the per-channel offsets that dominate the
    pooled features at initialisation, so the bottleneck passes on what differs between images.
    """

    def __init__(self, in_channels: int, num_classes: int, hidden: int = 22) -> None:
        super().__init__()
        self.dw = PooledDepthwise(in_channels)
        self.pw = nn.Conv2d(in_channels, hidden, 1, bias=False)
        self.bn = PooledBatchNorm(hidden)
        self.classifier = nn.Conv2d(hidden, num_classes, 1, bias=True)
        self.act = nn.Mish()

    def forward(self, x: Tensor) -> Tensor:
        x = x.mean((2, 3), keepdim=True)
        x = self.act(self.dw(x))
        x = self.act(self.bn(self.pw(x)))
        return self.classifier(x).flatten(1)


class PooledBatchNorm(nn.BatchNorm2d):
    """BatchNorm on pooled (N, C, 1, 1) features that also accepts a training batch of one image.

    With one image there is a single value per channel, so batch statistics do not exist and
    nn.BatchNorm2d raises; such a batch (the last, short batch of an epoch) is normalised with the
    running statistics instead, and leaves them unchanged.
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] * x.shape[2] * x.shape[3] == 1:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                            False, 0.0, self.eps)
        return super().forward(x)


class ShuffleNetFER(nn.Module):
    """ShuffleNetV2 1.0x with a switchable Conv1 width, PDWRes branch and output module.

    Submodule names follow torchvision (``conv1``, ``stage2`` ... ``conv5``) so ImageNet weights
    load by name; the classifier lives in ``head``.
    """

    def __init__(self, num_classes: int, stem_channels: int = 24, head: str = "linear",
                 pdwres: bool = False, head_hidden: int = 22) -> None:
        super().__init__()
        # Borrow torchvision's stem, stages and Conv5 rather than copying its blocks.
        base = torchvision.models.ShuffleNetV2(list(STAGE_REPEATS), [stem_channels, *STAGE_CHANNELS], num_classes=1)
        self.conv1, self.maxpool = base.conv1, base.maxpool
        self.stage2, self.stage3, self.stage4, self.conv5 = base.stage2, base.stage3, base.stage4, base.conv5
        self.pdwres = PDWRes(stem_channels, STAGE_CHANNELS[0]) if pdwres else None
        if head == "linear":
            self.head: nn.Module = LinearHead(STAGE_CHANNELS[-1], num_classes)
        elif head == "mish":
            self.head = MishDWSHead(STAGE_CHANNELS[-1], num_classes, head_hidden)
        else:
            raise FerError(f"unknown head {head!r}; use 'linear' or 'mish'")

    def forward(self, x: Tensor) -> Tensor:
        f1 = self.maxpool(self.conv1(x))
        x = self.stage2(f1)
        if self.pdwres is not None:
            x = self.pdwres(f1, x)
        x = self.conv5(self.stage4(self.stage3(x)))
        return self.head(x)


# ---- the registry -----------------------------------------------------------------------------
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


def _shufflenet_fer(num_classes: int, **kw: Any) -> nn.Module:
    return ShuffleNetFER(num_classes, **kw)


def _resnet(num_classes: int, depth: int) -> nn.Module:
    return getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=num_classes)


_SHUFFLE_IMAGENET = "ShuffleNet_V2_X1_0_Weights.IMAGENET1K_V1"
_SHUFFLE_ALIASES = {"head.fc.": "fc."}
register_model("shufflenet_v2", _shufflenet_fer, "ShuffleNetV2 1.0x baseline (torchvision, Conv1 24)", "student",
               _SHUFFLE_IMAGENET, _SHUFFLE_ALIASES, stem_channels=24, head="linear", pdwres=False, head_hidden=22)
register_model("lfer_head", _shufflenet_fer, "baseline + Mish depthwise-separable output module", "student",
               _SHUFFLE_IMAGENET, _SHUFFLE_ALIASES, stem_channels=24, head="mish", pdwres=False, head_hidden=22)
register_model("lfer", _shufflenet_fer, "LFER student: + Conv1 29 and PDWRes (the paper's model)", "student",
               _SHUFFLE_IMAGENET, _SHUFFLE_ALIASES, stem_channels=29, head="mish", pdwres=True, head_hidden=22)
register_model("resnet18", _resnet, "ResNet-18 teacher (for small machines)", "teacher",
               "ResNet18_Weights.IMAGENET1K_V1", depth=18)
register_model("resnet50", _resnet, "ResNet-50 teacher (the paper's)", "teacher",
               "ResNet50_Weights.IMAGENET1K_V2", depth=50)


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


# ---- initialisation ---------------------------------------------------------------------------
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


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike[str]) -> InitReport:
    """Load the tensors of a fercli checkpoint (or a plain state dict) that fit ``model``."""
    from fercli.checkpoint import load_state_source

    state = load_state_source(path)
    # Checkpoints saved from nn.DataParallel prefix every name with "module.".
    state = {k[7:] if k.startswith("module.") else k: v for k, v in state.items()}
    report = load_matching(model, state, str(path))
    if not report.loaded and not report.widened:
        raise FerError(f"{path}: no tensor fits this model ({type(model).__name__}); "
                       "is it a checkpoint of another architecture? pass a checkpoint of the same model")
    return report
