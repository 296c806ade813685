"""Defaults that scale with the data: the backbone LR and head multiplier of the strategies
that train the backbone (``partial``, ``finetune``, ``gradual``, ``lp-ft``).

The backbone LR grows with the number of training images: 1e-5 per 250 images, from 1e-5
(at 250 or fewer) to 1e-4 (at 2,500 or more). Measured (docs/concepts/finetune-defaults.md): on
ants/bees' 244 training images a backbone LR above 1e-5 erodes the pretrained features
within two epochs; on the hand-sign digits' 1,650 and elpv's 2,099 the larger LRs beat 1e-5
(99.0% against 97.1%; 76.8% against 74.5%). More images hold the backbone to the task as
it moves further from its pretrained weights; Li et al. (ICLR 2020, "Rethinking the
hyperparameters for fine-tuning") report the same direction. Between the two measured ends
the LR is proportional to the image count, the simplest rule that meets both; it is capped
at 1e-4, the largest LR measured to help, and the range test's onset of divergence on elpv
(2.6e-4) is 3x above the 8.4e-5 it gives there.

The head multiplier depends on how the head starts. A zero head must learn the task from
scratch in ten epochs, at the probe's 1e-3: 100x a 1e-5 backbone. A warm-started head
(``training.warm_head``) is already at its optimum for the frozen features, and AdamW moves
every weight by about the LR per step whatever the gradient's size, so it needs no
catch-up: 10x lets it follow the backbone. Measured: on the hand-sign digits the first epoch
kept the warm start (96.4% against the warm probe's 95.4%) where 100x at 1e-4 fell to 84.2%;
on elpv the first epoch dips to 70% either way (the backbone's LR, not the head's); on
ants/bees 10x ends three images below the probe on the split (one for 100x) and ties it in
5-fold cross-validation.
"""

from __future__ import annotations

LR_PER_IMAGE = 1e-5 / 250
MIN_LR = 1e-5
MAX_LR = 1e-4
WARM_HEAD_MULT = 10.0
COLD_HEAD_MULT = 100.0
RULE = "1e-5 per 250 training images, from 1e-5 to 1e-4"


def scaled_lr(n_train: int) -> float:
    """The default backbone LR for ``n_train`` training images (see the module docstring).

    >>> [f"{scaled_lr(n):.2g}" for n in (100, 244, 1650, 2099, 5000)]
    ['1e-05', '1e-05', '6.6e-05', '8.4e-05', '0.0001']
    """
    return float(min(MAX_LR, max(MIN_LR, LR_PER_IMAGE * n_train)))


def head_mult(warm: bool) -> float:
    """The default head LR multiplier: 10 over a warm-started head, 100 over a zero one."""
    return WARM_HEAD_MULT if warm else COLD_HEAD_MULT


def rule_line(n_train: int) -> str:
    """How the default LR was chosen, for the console and the manifest."""
    return f"{scaled_lr(n_train):.2g} for {n_train:,} training images ({RULE})"
