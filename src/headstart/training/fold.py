"""BatchNorm folded into the convolution before it, for passes that only read a network.

In eval mode a BatchNorm layer is a fixed per-channel affine map, so the convolution that
feeds it can absorb it (``w' = w g / sqrt(v + eps)``, ``b' = (b - m) g / sqrt(v + eps) +
beta``; torch's ``fuse_conv_bn_weights``) and the layer need not run. It is memory-bound (one
more read and write of every activation), and on this project's 2-core CPU folding makes
EfficientNet-Lite0's forward pass about 1.4x faster (``benchmarks/fold_speed.py``). ONNX
Runtime does the same to an exported graph; this does it for the passes headstart runs in
PyTorch: features for the cache, validation during training, evaluate, predict, serve.

Which convolution feeds which BatchNorm is found by running the network once on a small
input and matching tensors (a BatchNorm whose input is exactly a convolution's output),
never by names or positions. The folded network is then checked against the unfolded one on
that input, and left as it was if they differ (a convolution's output also read elsewhere).

Folding is in place and undone exactly (the original tensors are put back), so a run never
saves folded weights. The BatchNorm modules stay where every reference to them is (the
multi-layer probe's taps hold the modules themselves); while folded, each one's ``forward``
is its activation alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from headstart.backbones.split import probe_images

FOLDABLE = (nn.BatchNorm2d, BatchNormAct2d)  # exactly these types: their forward is known
TOLERANCE = 1e-3  # largest difference allowed, relative to the output's largest magnitude


@dataclass
class Folding:
    """The BatchNorm layers folded into their convolutions; :meth:`undo` restores them
    exactly."""

    saved: list[tuple[nn.Conv2d, nn.Module, torch.Tensor, Any]] = field(default_factory=list)

    @property
    def count(self) -> int:
        """How many BatchNorm layers are folded."""
        return len(self.saved)

    def undo(self) -> None:
        """Put the original weights back and let every BatchNorm compute again."""
        with torch.no_grad():
            for conv, bn, weight, bias in reversed(self.saved):
                conv.weight.data = weight
                if bias is None:
                    conv.bias = None
                else:
                    conv.bias.data = bias
                del bn.forward  # the class's forward again
        self.saved.clear()


def fold_batchnorm(module: nn.Module, example: torch.Tensor | None = None) -> Folding:
    """Fold every eval-mode BatchNorm of ``module`` that reads only a convolution's output
    into that convolution, in place; nothing when the folded network would compute anything
    else, or when ``module`` cannot run on its probe input: a small image batch, or
    ``example`` (a few rows of its real input: a partial run's tail reads feature maps).

    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)).eval()
    >>> folding = fold_batchnorm(net)
    >>> folding.count, net[0].bias is not None
    (1, True)
    >>> folding.undo(); net[0].bias is None
    True
    """
    folding = Folding()
    if not any(type(m) in FOLDABLE and _frozen(m) for m in module.modules()):
        return folding
    x = probe_images(module) if example is None else example
    if x is None:
        return folding
    try:
        pairs, before = _conv_bn_pairs(module, x)
    except Exception:  # a network that does not take images (a partial run's tail reads
        return folding  # feature maps) or not this size: it runs as it is
    with torch.inference_mode(False), torch.no_grad():  # normal tensors, even when called
        for conv, bn in pairs:  # inside an inference-mode pass
            weight, bias = conv.weight.data, None if conv.bias is None else conv.bias.data
            w, b = fuse_conv_bn_weights(
                weight, bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            conv.weight.data = w.data
            if bias is None:
                conv.bias = nn.Parameter(b.data, requires_grad=False)
            else:
                conv.bias.data = b.data
            bn.forward = _passthrough(bn)
            folding.saved.append((conv, bn, weight, bias))
    with torch.inference_mode():
        after = _flat(module(x))
    scale = max(1.0, max((t.abs().max().item() for t in before), default=0.0))
    if any((a - b).abs().max().item() > TOLERANCE * scale for a, b in zip(before, after)):
        folding.undo()
    return folding


@contextmanager
def folded_batchnorm(module: nn.Module, example: torch.Tensor | None = None) -> Iterator[int]:
    """:func:`fold_batchnorm` for the length of a ``with`` block, undone on the way out
    (an exception included); yields how many BatchNorm layers were folded."""
    folding = fold_batchnorm(module, example)
    try:
        yield folding.count
    finally:
        folding.undo()


def _frozen(bn: nn.Module) -> bool:
    """An eval-mode BatchNorm with running statistics, not folded yet: a fixed affine map."""
    if "forward" in vars(bn):  # _passthrough's mark: a second engine over one loaded run
        return False
    return not bn.training and bn.running_mean is not None and bn.running_var is not None


def _conv_bn_pairs(
    module: nn.Module, x: torch.Tensor
) -> tuple[list[tuple[nn.Conv2d, nn.Module]], list[torch.Tensor]]:
    """(convolution, BatchNorm) pairs where the BatchNorm's input is the convolution's output
    tensor itself, each convolution in one pair at most; and ``module``'s output on ``x``
    (the unfolded network's, which the folded one is checked against)."""
    made_by: dict[int, nn.Conv2d] = {}
    outputs: list[torch.Tensor] = []  # kept alive, so that no id is reused during the pass
    pairs: list[tuple[nn.Conv2d, nn.Module]] = []

    def conv_hook(conv: nn.Module, _: Any, out: torch.Tensor) -> None:
        made_by[id(out)] = conv  # type: ignore[assignment]
        outputs.append(out)

    def bn_hook(bn: nn.Module, inputs: tuple[Any, ...]) -> None:
        conv = made_by.get(id(inputs[0]))
        if conv is not None and type(bn) in FOLDABLE and _frozen(bn):
            pairs.append((conv, bn))

    hooks = [
        m.register_forward_hook(conv_hook)
        if isinstance(m, nn.Conv2d)
        else m.register_forward_pre_hook(bn_hook)
        for m in module.modules()
        if isinstance(m, nn.Conv2d | nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with torch.inference_mode():
            out = _flat(module(x))
    finally:
        for h in hooks:
            h.remove()
    convs = [id(c) for c, _ in pairs]
    bns = [id(b) for _, b in pairs]
    unique = [(c, b) for c, b in pairs if convs.count(id(c)) == 1 and bns.count(id(b)) == 1]
    return unique, out


def _passthrough(bn: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """What ``bn`` computes once its affine map lives in the convolution: nothing, or
    timm's dropout and activation after the normalisation. A function, not a module, so
    that nothing is registered on ``bn``."""
    if isinstance(bn, BatchNormAct2d):
        drop, act = bn.drop, bn.act
        return lambda x: act(drop(x))
    return lambda x: x


def _flat(out: Any) -> list[torch.Tensor]:
    """The tensors of a network's output (a tensor, or a dict, tuple or list of them)."""
    if isinstance(out, torch.Tensor):
        return [out.float()]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for o in out for t in _flat(o)]
    return []
