"""Numeric precision of the forward and backward passes: ``--precision fp32|bf16|fp16|auto``.

Mixed precision runs the matrix multiplications and convolutions in a 16-bit format under
``torch.autocast`` while the weights, the optimizer and the loss stay in float32. bfloat16
keeps float32's exponent range, so it needs no loss scaling; float16 does (a GradScaler), and
has fast kernels only on GPUs.

``auto`` is a rule from measurements (``benchmarks/train_throughput.py``), not a guess: on a
CUDA GPU with bfloat16 (Ampere and later) bf16, on an older one fp16; on a CPU with native
bfloat16 instructions (AVX-512 BF16 or AMX) bf16, where a 10-epoch fine-tune of
EfficientNet-Lite0 ran 1.37-1.53x and a cold probe 1.27-1.53x as fast as float32 at the same
accuracy on this project's CPU (``benchmarks/precision.py``, validation in float32; on an
Intel Xeon with AMX, bf16 training needed depthwise convolutions' backward pass in float32
to beat float32: :mod:`headstart.training.depthwise`);
elsewhere (other CPUs, Apple MPS) float32, where no faster path was measured. One exception,
also measured: the multi-layer probe (``--layers all``) stays in float32 under ``auto`` (see
:func:`for_layers`).

Mixed precision is for training only. Predictions are served in float32 (``predict`` and
``serve`` on a run folder, and the ONNX export), so validation, the choice of the best epoch,
``evaluate`` and the validation images' cached features run in float32 too
(:func:`serving`): the score a run reports is the score of the model that ships. Measured on
elpv, a fine-tune trained and validated in bf16 scored 79.62% there but 78.67% served. On a
CUDA GPU float32 means float32: TF32, cuDNN's default for convolutions, is off in fp32 passes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import get_args

import torch

from headstart.config import PrecisionName
from headstart.errors import ConfigError
from headstart.training.depthwise import bf16_backward_is_slow, float32_backward

PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 arithmetic (AVX-512 BF16 or AMX tiles)."""
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


@dataclass(frozen=True)
class Precision:
    """A resolved precision on a device type."""

    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda | mps

    @property
    def mixed(self) -> bool:
        """Whether autocast runs (anything but fp32)."""
        return self.name != "fp32"

    @property
    def scaled(self) -> bool:
        """Whether the loss needs a GradScaler (float16's narrow exponent range)."""
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context for a forward pass. In fp32 on a CUDA GPU, float32 exactly:
        TF32 off for convolutions and matrix products (cuDNN's convolutions default to TF32,
        a 10-bit mantissa), so a GPU scores a model as the CPU and ONNX Runtime serve it."""
        if not self.mixed:
            return _exact_float32() if self.device_type == "cuda" else contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def scaler(self) -> torch.amp.GradScaler:
        """A GradScaler, enabled only where the precision needs one."""
        return torch.amp.GradScaler(self.device_type, enabled=self.scaled)

    def training(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """The context training steps of ``model`` run in: on a CPU in bf16 whose depthwise
        convolutions' bf16 backward is measured clearly slower than float32's (3-15x on an
        Intel Xeon with AMX), they take it in float32 (:mod:`headstart.training.depthwise`);
        elsewhere nothing changes."""
        if self.device_type == "cpu" and self.name == "bf16" and bf16_backward_is_slow():
            return float32_backward(model)
        return contextlib.nullcontext()


@contextlib.contextmanager
def _exact_float32() -> Iterator[None]:
    """TF32 off on CUDA within the block; the caller's settings come back after."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


def serving(device: torch.device) -> Precision:
    """The precision predictions are served in, and so validated and evaluated in: float32
    (see the module docstring).

    >>> serving(torch.device("cpu"))
    Precision(name='fp32', device_type='cpu')
    """
    return Precision("fp32", device.type)


def auto_precision(device: torch.device) -> str:
    """The precision ``auto`` picks on ``device`` (see the module docstring).

    >>> auto_precision(torch.device("mps"))
    'fp32'
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_has_bf16():
        return "bf16"
    return "fp32"


def for_layers(name: str, layers: str) -> str:
    """The precision a run asks for, given the stages its head reads: ``auto`` stays in
    float32 for the multi-layer probe, whose early-stage statistics lose accuracy in
    bfloat16 (measured on elpv at 300 px: 78.10% against 80.76% in float32); explicit
    choices are kept.

    >>> for_layers("auto", "all"), for_layers("auto", "last"), for_layers("bf16", "all")
    ('fp32', 'auto', 'bf16')
    """
    return "fp32" if name == "auto" and layers == "all" else name


def resolve_precision(name: str, device: torch.device) -> Precision:
    """``name`` on ``device``, checked: fp16 needs a GPU, bf16 on a CPU its instructions.

    >>> resolve_precision("fp32", torch.device("cpu"))
    Precision(name='fp32', device_type='cpu')
    """
    if name not in PRECISIONS:
        raise ConfigError(
            f"ConfigError: --precision {name!r}; expected one of {', '.join(PRECISIONS)}."
        )
    if name == "auto":
        name = auto_precision(device)
    if name == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"ConfigError: --precision fp16 needs a CUDA GPU (float16 has no fast kernels on "
            f"{device.type}, and its gradients need loss scaling); use bf16, fp32 or auto."
        )
    if name == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        raise ConfigError(
            "ConfigError: --precision bf16, but this CPU has no native bfloat16 instructions "
            "(AVX-512 BF16 or AMX), so it would be slower than fp32; use fp32 or auto."
        )
    if name == "bf16" and device.type == "mps":
        raise ConfigError("ConfigError: --precision bf16 is not measured on MPS; use fp32.")
    return Precision(name, device.type)
