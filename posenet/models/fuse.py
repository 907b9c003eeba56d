"""Batch norm folded into the convolutions before it, for inference.

In eval mode a batch norm after a convolution is a per-channel affine map of the convolution's
output, ``y = (conv(x) - mean) * gamma / sqrt(var + eps) + beta``, so it can be folded into
the convolution's weights and bias once: ``W' = W * s`` (per output channel) and
``b' = (b - mean) * s + beta`` with ``s = gamma / sqrt(var + eps)``. The folded network
computes the same function (to float rounding: the new weights are computed in float64) with
one pass over each feature map less per pair: ResNet-50 has 53 such pairs.

Which convolution feeds which batch norm is read off the structure, never guessed from names:

* in an ``nn.Sequential``, a ``Conv2d`` directly followed by a batch norm;
* in the modules whose ``forward`` applies ``bnN`` right after ``convN`` (torchvision's
  ``BasicBlock``, ``Bottleneck`` and ``ResNet``, and ``posenet.models.backbone.ResNetTrunk``),
  the pairs ``(conv1, bn1)``, ``(conv2, bn2)``, ``(conv3, bn3)`` that exist.

A batch norm that comes before its convolution (the hourglass's pre-activation residuals: BN,
ReLU, conv) cannot be folded and is left as it is. Both ``nn.BatchNorm2d`` (with running
statistics) and torchvision's ``FrozenBatchNorm2d`` fold.

``fold_batchnorm(model)`` returns an inference-only copy and leaves ``model`` as it was; the
copy shares every tensor it does not change with ``model`` (the PRN's 70 M weights are not
duplicated), so train neither of them afterwards. ``inplace=True`` folds ``model`` itself.
"""
from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from posenet.models.backbone import ResNetTrunk

BATCH_NORMS = (nn.BatchNorm2d, FrozenBatchNorm2d)
# Modules whose forward applies bnN directly to convN's output.
NUMBERED_PAIRS = (torchvision.models.resnet.BasicBlock, torchvision.models.resnet.Bottleneck,
                  torchvision.models.resnet.ResNet, ResNetTrunk)


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """(parent, conv attribute name, batch-norm attribute name) of every conv + batch-norm pair
    of ``model`` that ``fold_batchnorm`` folds (see the module docstring)."""
    pairs = []
    for parent in model.modules():
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            for a, b in zip(names, names[1:]):
                if isinstance(parent._modules[a], nn.Conv2d) and _foldable_norm(parent._modules[b]):
                    pairs.append((parent, a, b))
        elif isinstance(parent, NUMBERED_PAIRS):
            for i in (1, 2, 3):
                conv, norm = getattr(parent, f"conv{i}", None), getattr(parent, f"bn{i}", None)
                if isinstance(conv, nn.Conv2d) and _foldable_norm(norm):
                    pairs.append((parent, f"conv{i}", f"bn{i}"))
    return pairs


def _foldable_norm(module) -> bool:
    if isinstance(module, nn.BatchNorm2d):
        return module.track_running_stats and module.running_mean is not None
    return isinstance(module, FrozenBatchNorm2d)


def fold_batchnorm(model: nn.Module, inplace: bool = False) -> nn.Module:
    """``model`` with each conv + batch-norm pair (``foldable_pairs``) replaced by one
    convolution (the batch norm becomes ``nn.Identity``); an eval-mode model only, as batch
    norm in training mode normalises by the batch's statistics. Returns an inference-only copy
    (sharing the tensors it does not change with ``model``), or ``model`` itself folded with
    ``inplace``. The copy is in eval mode."""
    if model.training:
        raise ValueError("fold_batchnorm folds eval-mode batch norms: call model.eval() first "
                         "(a training model normalises by each batch's statistics)")
    pairs = foldable_pairs(model)
    if not inplace:
        touched = set()
        for parent, conv, norm in pairs:
            for module in (parent._modules[conv], parent._modules[norm]):
                touched.update(id(t) for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)))
        shared = {id(t): t for t in (*model.parameters(), *model.buffers()) if id(t) not in touched}
        index = {id(m): name for name, m in model.named_modules()}
        folded = copy.deepcopy(model, memo=shared)
        modules = dict(folded.named_modules())
        pairs = [(modules[index[id(parent)]], conv, norm) for parent, conv, norm in pairs]
        model = folded
    for parent, conv_name, norm_name in pairs:
        _fold_pair(parent._modules[conv_name], parent._modules[norm_name])
        parent._modules[norm_name] = nn.Identity()
    return model.eval()


@torch.no_grad()
def _fold_pair(conv: nn.Conv2d, norm: nn.Module) -> None:
    weight = conv.weight.double()
    scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    new_bias = (bias - norm.running_mean.double()) * scale + norm.bias.double()
    dtype = conv.weight.dtype
    conv.weight = nn.Parameter((weight * scale.view(-1, *([1] * (weight.dim() - 1)))).to(dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter(new_bias.to(dtype), requires_grad=False)


__all__ = ["BATCH_NORMS", "fold_batchnorm", "foldable_pairs"]
