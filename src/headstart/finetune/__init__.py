"""Fine-tuning: freezing, BatchNorm policy, strategy plans and parameter groups."""

from headstart.finetune.freeze import BN_POLICIES, apply_bn_policy, is_frozen, set_trainable
from headstart.finetune.plans import (
    DEFAULTS,
    STRATEGIES,
    Phase,
    Plan,
    apply_phase,
    make_plan,
    param_groups,
    stage_of,
)

__all__ = [
    "BN_POLICIES",
    "DEFAULTS",
    "STRATEGIES",
    "Phase",
    "Plan",
    "apply_bn_policy",
    "apply_phase",
    "is_frozen",
    "make_plan",
    "param_groups",
    "set_trainable",
    "stage_of",
]
