"""The LFER student family: ShuffleNetV2 1.0x with a switchable Conv1 width, PDWRes branch and head.

:class:`ShuffleNetFER` reuses torchvision's ShuffleNetV2 stem, stages and Conv5, so parameter names
match torchvision's and ImageNet weights map across by name. What the paper adds lives here too:
the parallel depthwise residual branch (:class:`PDWRes`) and the Mish depthwise-separable output
module (:class:`MishDWSHead`). The registry (:mod:`fercli.models.registry`) names three switch
settings of this one class: ``shufflenet_v2``, ``lfer_head`` and ``lfer``.
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from fercli.errors import FerError

STAGE_CHANNELS = (116, 232, 464, 1024)  # ShuffleNetV2 1.0x Stage2, Stage3, Stage4, Conv5
STAGE_REPEATS = (4, 8, 4)


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
