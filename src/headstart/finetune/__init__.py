"""Fine-tuning: freezing, BatchNorm policy, strategy plans and parameter groups."""

from headstart.finetune.freeze import apply_bn_policy, is_frozen
from headstart.finetune.plans import (
    DEFAULTS,
    STRATEGIES,
    Phase,
    Plan,
    StrategyOptions,
    apply_phase,
    backbone_stage_names,
    make_plan,
    param_groups,
    stage_lrs,
    stage_params,
    trainable_per_phase,
)

__all__ = [
    "DEFAULTS",
    "STRATEGIES",
    "Phase",
    "Plan",
    "StrategyOptions",
    "apply_bn_policy",
    "apply_phase",
    "backbone_stage_names",
    "is_frozen",
    "make_plan",
    "param_groups",
    "stage_lrs",
    "stage_params",
    "trainable_per_phase",
]
