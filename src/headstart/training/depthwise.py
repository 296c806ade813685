"""Depthwise convolutions' backward pass in float32 during bfloat16 training on a CPU.

Under CPU bfloat16 autocast, a depthwise convolution's backward pass (the gradients of a
convolution with one filter per channel, as in EfficientNet, MobileNet and ConvNeXt) ran 3 to
15 times slower than in float32 on an Intel Xeon with AMX (torch 2.14.1, oneDNN): it took 72%
of an EfficientNet-Lite0 training step, and the whole bf16 step ran at 0.7-0.85x float32
while the forward pass alone ran 1.9x. Here the forward pass stays in bfloat16 and only the
backward pass is computed in float32 (upcast, then cast back): Lite0's training step then
ran 1.5-1.75x float32 in a microbenchmark on that machine, and the whole fine-tune's training
1.27-1.57x at the same accuracy (``benchmarks/depthwise_backward.py``). The gradients are
float32 arithmetic on the same saved bfloat16 activations, so no less accurate than bf16's.

Applied for the duration of training (:meth:`headstart.training.precision.Precision.training`)
by replacing each depthwise ``nn.Conv2d``'s ``forward`` on the instance, and restored after:
the weights, their names and the exported graph are unchanged, and outside autocast or
without gradients (validation) the layer computes exactly what it did.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn


class _Float32Backward(torch.autograd.Function):
    """``F.conv2d`` as autocast runs it forward; its gradients computed in float32."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, groups, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conv
        wanted = [ctx.needs_input_grad[0], ctx.needs_input_grad[1],
                  has_bias and ctx.needs_input_grad[2]]  # fmt: skip
        with torch.autocast(x.device.type, enabled=False):
            gx, gw, gb = torch.ops.aten.convolution_backward(
                grad.float(), x.float(), weight.float(), [weight.shape[0]] if has_bias else None,
                stride, padding, dilation, False, [0, 0], groups, wanted,
            )  # fmt: skip
        gx = gx.to(x.dtype) if gx is not None else None
        gw = gw.to(weight.dtype) if gw is not None else None
        return gx, gw, gb, None, None, None, None


def is_depthwise(module: nn.Module) -> bool:
    """A plain 2-D convolution with one group per input channel (and several channels),
    zero padding given in pixels."""
    return (
        type(module).forward is nn.Conv2d.forward
        and isinstance(module, nn.Conv2d)
        and module.groups > 1
        and module.groups == module.in_channels
        and module.padding_mode == "zeros"
        and isinstance(module.padding, tuple)
    )


def _forward(conv: nn.Conv2d):
    plain = nn.Conv2d.forward.__get__(conv)

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not (torch.is_grad_enabled() and torch.is_autocast_enabled(x.device.type)):
            return plain(x)
        return _Float32Backward.apply(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                      conv.dilation, conv.groups)  # fmt: skip

    return forward


@contextlib.contextmanager
def float32_backward(model: nn.Module) -> Iterator[int]:
    """Within the block, ``model``'s depthwise convolutions compute their backward pass in
    float32 under autocast; yields how many there are."""
    convs = [m for m in model.modules() if is_depthwise(m)]
    for conv in convs:
        conv.forward = _forward(conv)  # type: ignore[method-assign]
    try:
        yield len(convs)
    finally:
        for conv in convs:
            conv.__dict__.pop("forward", None)
