"""Gradient checkpointing (``--grad-checkpointing``): fine-tuning's memory for compute.

Training keeps every layer's activations for the backward pass, and an inverted-bottleneck
network's are large: EfficientNet-Lite0 at 224 px keeps about 82 MB per image, 2.6 GB for a
batch of 32 (``benchmarks/finetune_memory.py``). timm's gradient checkpointing keeps only
each block's input and recomputes the block in the backward pass: about half the memory
(39-41 MB per image) for 1.4x the step time, measured there. The gradients are those of the
plain pass; BatchNorm in train mode would count each batch twice in its running statistics
(the recomputation updates them again), so ``--bn train`` is refused rather than changed.
"""

from __future__ import annotations

from torch import nn

from headstart.errors import ConfigError


def check_checkpointing(backbone: nn.Module, name: str, bn: str) -> None:
    """ConfigError when ``--grad-checkpointing`` cannot be honoured: BatchNorm in train mode,
    or a backbone without timm's ``set_grad_checkpointing``. Called before any work."""
    if bn == "train":
        raise ConfigError(
            "ConfigError: --grad-checkpointing recomputes each block in the backward pass, "
            "which under --bn train would update the BatchNorm statistics twice per batch; "
            "use --bn frozen (or adapt), or leave out --grad-checkpointing."
        )
    if not callable(getattr(backbone, "set_grad_checkpointing", None)):
        raise ConfigError(
            f"ConfigError: --grad-checkpointing: {name} has no gradient checkpointing (timm "
            "models do); leave the option out, or lower --batch-size to save memory."
        )


def checkpoint_activations(backbone: nn.Module, reads_features: bool) -> str:
    """Turn on ``backbone``'s gradient checkpointing (checked by :func:`check_checkpointing`)
    unless the run trains on cached features (``reads_features``: no backbone activations
    are kept, nothing to save); returns the console line.

    >>> checkpoint_activations(nn.Linear(1, 1), reads_features=True)[:5]
    'note:'
    """
    if reads_features:
        return (
            "note: --grad-checkpointing saves nothing here: the frozen backbone's features are "
            "cached and the trained part runs on them"
        )
    backbone.set_grad_checkpointing(True)  # type: ignore[operator]
    return (
        "memory: each block's activations are recomputed in the backward pass "
        "(--grad-checkpointing): about half the memory, about 1.4x the step time"
    )
