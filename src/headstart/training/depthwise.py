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

CPUs differ (an earlier session's machine ran the bf16 step 1.41x faster than fp32 as it
was), so it is decided by measurement, once per machine: :func:`bf16_backward_is_slow` times
one typical depthwise layer's backward pass in both formats (a fraction of a second) and
keeps the answer in the cache folder, so every later run and every resumed run on this
machine takes the same path. Applied for the duration of training
(:meth:`headstart.training.precision.Precision.training`) by replacing each depthwise
``nn.Conv2d``'s ``forward`` on the instance, and restored after: the weights, their names
and the exported graph are unchanged, and outside autocast or without gradients
(validation) the layer computes exactly what it did.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import time
import types
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from headstart.cache.store import cache_root, digest_of
from headstart.errors import CheckpointError
from headstart.training.files import write_atomic

SLOWER = 1.5  # bf16's backward must take this many times fp32's to switch: a clear loss only


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


def _forward(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """A depthwise layer's forward while patched (bound to the layer, so a deep copy made
    meanwhile is bound to its own copy)."""
    if not (torch.is_grad_enabled() and torch.is_autocast_enabled(x.device.type)):
        return nn.Conv2d.forward(conv, x)
    return _Float32Backward.apply(x, conv.weight, conv.bias, conv.stride, conv.padding,
                                  conv.dilation, conv.groups)  # fmt: skip


@contextlib.contextmanager
def float32_backward(model: nn.Module) -> Iterator[int]:
    """Within the block, ``model``'s depthwise convolutions compute their backward pass in
    float32 under autocast; yields how many there are."""
    convs = [m for m in model.modules() if is_depthwise(m)]
    for conv in convs:
        conv.forward = types.MethodType(_forward, conv)  # type: ignore[method-assign]
    try:
        yield len(convs)
    finally:
        for conv in convs:
            conv.__dict__.pop("forward", None)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _backward_ms(dtype: torch.dtype) -> float:
    """The fastest of three backward passes of a 5x5 depthwise convolution over 96 channels
    at 56 px, batch 4 (an EfficientNet stage-2 layer), in ``dtype``."""
    gen = torch.Generator().manual_seed(0)
    shape = (4, 96, 56, 56)
    x, g = (torch.randn(shape, generator=gen).to(dtype, memory_format=torch.channels_last)
            for _ in range(2))  # fmt: skip
    w = torch.randn(96, 1, 5, 5, generator=gen).to(dtype)
    times = []
    for _ in range(4):
        start = time.perf_counter()
        torch.ops.aten.convolution_backward(g, x, w, None, (1, 1), (2, 2), (1, 1), False,
                                            [0, 0], 96, [True, True, False])  # fmt: skip
        times.append(time.perf_counter() - start)
    return 1000 * min(times[1:])  # the first warms up


@functools.lru_cache(maxsize=1)
def bf16_backward_is_slow() -> bool:
    """Whether this CPU computes a depthwise convolution's backward pass clearly slower in
    bfloat16 than in float32 (measured once per machine and torch version, then read back)."""
    cpu = _cpu_name()
    key = digest_of({"cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
                     "slower": SLOWER})  # fmt: skip
    path = cache_root() / "machine" / f"depthwise-backward-{key}.json"
    try:
        return bool(json.loads(path.read_text())["slow"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    bf16, fp32 = _backward_ms(torch.bfloat16), _backward_ms(torch.float32)
    measured = {"slow": bf16 > SLOWER * fp32, "bf16_ms": bf16, "fp32_ms": fp32,
                "cpu": cpu, "torch": torch.__version__}  # fmt: skip
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(measured).encode())
    except (OSError, CheckpointError):
        pass  # a read-only or full cache: measured again next time
    return measured["slow"]
