"""Freezing, and the BatchNorm policy that decides which normalisation layers keep their stats.

Frozen means frozen: ``requires_grad=False``, absent from the optimizer, and (policy
``frozen``) BatchNorm running statistics that do not move, since a BatchNorm layer in train
mode updates its running mean/var on every forward pass even when its weights are frozen.
"""

from __future__ import annotations

from torch import nn

from headstart.config import BnPolicy


def is_frozen(module: nn.Module) -> bool:
    """True when ``module`` has parameters and none of them trains."""
    params = list(module.parameters(recurse=False))
    return bool(params) and not any(p.requires_grad for p in params)


def apply_bn_policy(model: nn.Module, policy: BnPolicy) -> None:
    """Put BatchNorm layers in eval mode according to ``policy``; call after ``model.train()``.

    * ``frozen``: BatchNorm layers whose parameters are frozen run in eval mode (the default);
    * ``eval``: every BatchNorm layer runs in eval mode, trainable or not (Keras's recipe for
      fine-tuning on small data: affine parameters learn, statistics stay ImageNet's);
    * ``train``: every BatchNorm layer updates its statistics;
    * ``adapt``: statistics re-estimated on the training images before training
      (``finetune.bn``), then fixed as with ``eval``.
    """
    if policy == "train":
        return
    fixed = policy in ("eval", "adapt")
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and (fixed or is_frozen(m)):
            m.eval()
