"""Strategies as data: a plan says which stages train, at which LR multiplier, from which epoch.

One training loop executes any plan (``headstart.training.loop``). Stages are found by
parameter name (``backbones.stages``); the new classifier is the ``head`` stage. A stage
absent from a phase (or with multiplier 0) is frozen in that phase.

>>> plan = make_plan(StrategyOptions("gradual", unfreeze_every=2), ["stem", "layer1", "layer2"], 6)
>>> [(p.start_epoch, sorted(p.lr_mult)) for p in plan.phases]
[(0, ['head']), (2, ['head', 'layer2']), (4, ['head', 'layer1', 'layer2'])]
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from headstart.backbones.stages import HEAD, group_by_stage
from headstart.errors import ConfigError
from headstart.finetune.freeze import BnPolicy
from headstart.finetune.scaling import head_mult
from headstart.strategies import STRATEGIES


@dataclass(frozen=True)
class Phase:
    """From ``start_epoch`` (0-based) on, the stages in ``lr_mult`` train at base LR x mult."""

    start_epoch: int
    lr_mult: dict[str, float]


@dataclass(frozen=True)
class Plan:
    """A named strategy: its phases in epoch order and its BatchNorm policy."""

    name: str
    phases: list[Phase] = field(default_factory=list)
    bn: BnPolicy = "frozen"

    @property
    def first_trainable(self) -> str:
        """The first stage the first phase trains (``head`` for a probe)."""
        return next(iter(self.phases[0].lr_mult))

    def phase_at(self, epoch: int) -> Phase:
        """The phase in force at ``epoch`` (0-based)."""
        return [p for p in self.phases if p.start_epoch <= epoch][-1]


@dataclass(frozen=True)
class StrategyDefaults:
    """What a strategy uses when the user does not say otherwise; ``None``: scaled with the
    data (``lr``) or chosen by how the head starts (``head_lr_mult``), see
    :mod:`headstart.finetune.scaling`."""

    lr: float | None
    weights: str  # "default" or "none"
    bn: BnPolicy
    head_lr_mult: float | None = 1.0


# The strategies that train the backbone: LR scaled with the number of training images, the
# head at 10x over a warm-started head (100x over a zero one), and BatchNorm's ImageNet
# statistics kept (`--bn eval`; measured on ants/bees, BN in train mode re-estimates them from
# batches of 32 random crops and validation accuracy swings 2-3 points from epoch to epoch).
# See docs/concepts/finetune-defaults.md for the measurements.
_SCALED = StrategyDefaults(lr=None, weights="default", bn="eval", head_lr_mult=None)
DEFAULTS: dict[str, StrategyDefaults] = {
    "probe": StrategyDefaults(lr=1e-3, weights="default", bn="frozen"),
    "partial": _SCALED,
    "finetune": _SCALED,
    "gradual": _SCALED,
    "lp-ft": _SCALED,
    "scratch": StrategyDefaults(lr=1e-3, weights="none", bn="train"),
}


@dataclass(frozen=True)
class StrategyOptions:
    """The knobs of every strategy; None means the strategy's default."""

    name: str
    head_lr_mult: float | None = None
    bn: BnPolicy | None = None
    unfreeze_from: str | None = None  # partial: first trainable stage
    lr_decay: float | None = None  # finetune/gradual: each earlier stage x this
    stage_lr: Mapping[str, float] | None = None  # finetune: explicit multipliers per stage
    unfreeze_every: int | None = None  # gradual: epochs between unfreezing steps
    probe_epochs: int | None = None  # lp-ft: epochs of the probe phase


def _check_stage(name: str, stages: Sequence[str], option: str) -> None:
    if name not in (*stages, HEAD):
        raise ConfigError(
            f"ConfigError: {option} {name!r} is not a stage of this backbone. "
            f"Stages: {', '.join([*stages, HEAD])} (see `headstart inspect BACKBONE`)."
        )


def _decayed(stages: Sequence[str], decay: float) -> dict[str, float]:
    """Last backbone stage x1, each earlier stage the next one's multiplier x ``decay``."""
    n = len(stages)
    return {s: decay ** (n - 1 - i) for i, s in enumerate(stages)}


def _explicit(stages: Sequence[str], given: Mapping[str, float], head: float) -> dict[str, float]:
    """Multipliers named per stage; an unnamed stage takes the next named stage's multiplier."""
    for s in given:
        _check_stage(s, stages, "--stage-lr")
    out: dict[str, float] = {HEAD: given.get(HEAD, head)}
    nxt = out[HEAD]
    for s in reversed(stages):
        nxt = given.get(s, nxt)
        out[s] = nxt
    return {s: m for s, m in out.items() if m > 0}


def make_plan(
    opts: StrategyOptions,
    stages: Sequence[str],
    epochs: int,
    default_unfreeze_from: str | None = None,
) -> Plan:
    """The plan for a strategy over a backbone's ``stages`` (forward order, head excluded).

    ``default_unfreeze_from`` is where ``partial`` starts when the options do not say
    (the family's choice, e.g. ResNet ``layer4``); when absent or not a stage of this
    model (a shallower family member), the last backbone stage.
    """
    if opts.name not in DEFAULTS:
        raise ConfigError(
            f"ConfigError: --strategy {opts.name!r} is not known; "
            f"expected one of {', '.join(STRATEGIES)}."
        )
    d = DEFAULTS[opts.name]
    bn = opts.bn or d.bn
    head = opts.head_lr_mult if opts.head_lr_mult is not None else d.head_lr_mult
    if head is None:  # a resolved config always sets it; a bare plan (inspect) assumes warm
        head = head_mult(warm=True)
    decayed = _decayed(stages, opts.lr_decay if opts.lr_decay is not None else 1.0)
    name = opts.name
    if name == "probe":
        return Plan(name, [Phase(0, {HEAD: 1.0})], bn)
    if name == "scratch":
        return Plan(name, [Phase(0, {**dict.fromkeys(stages, 1.0), HEAD: 1.0})], bn)
    if name == "partial":
        fallback = default_unfreeze_from if default_unfreeze_from in stages else stages[-1]
        start = opts.unfreeze_from or fallback
        _check_stage(start, stages, "--unfreeze-from")
        trainable = list(stages)[list(stages).index(start) :] if start != HEAD else []
        return Plan(name, [Phase(0, {**{s: decayed[s] for s in trainable}, HEAD: head})], bn)
    if name == "finetune":
        mults = _explicit(stages, opts.stage_lr, head) if opts.stage_lr else {**decayed, HEAD: head}
        return Plan(name, [Phase(0, mults)], bn)
    if name == "gradual":
        every = opts.unfreeze_every or max(1, epochs // 5)
        phases, current = [Phase(0, {HEAD: head})], {HEAD: head}
        for k, stage in enumerate(reversed(stages), start=1):
            if k * every >= epochs:
                break
            current = {stage: decayed[stage], **current}
            phases.append(Phase(k * every, dict(current)))
        return Plan(name, phases, bn)
    # lp-ft: probe until the head has converged, then everything at the small LR
    probe = opts.probe_epochs if opts.probe_epochs is not None else max(1, epochs // 2)
    return Plan(name, [Phase(0, {HEAD: head}), Phase(probe, {**decayed, HEAD: 1.0})], bn)


def stage_params(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """Parameters of a Classifier by stage, in forward order, ``head`` last."""
    family = getattr(model, "family", "generic")
    named = dict(model.named_parameters())
    backbone = [n[len("backbone.") :] for n in named if n.startswith("backbone.")]
    out = {
        stage: [(f"backbone.{n}", named[f"backbone.{n}"]) for n in names]
        for stage, names in group_by_stage(family, backbone).items()
    }
    out[HEAD] = [(n, p) for n, p in named.items() if not n.startswith("backbone.")]
    return out


def backbone_stage_names(model: nn.Module) -> list[str]:
    """The backbone's stage names in forward order (``head`` excluded)."""
    return [s for s in stage_params(model) if s != HEAD]


def _iter_params(model: nn.Module) -> Iterator[tuple[str, str, nn.Parameter]]:
    for stage, params in stage_params(model).items():
        for name, p in params:
            yield stage, name, p


def apply_phase(model: nn.Module, phase: Phase) -> None:
    """Make exactly the phase's stages trainable; freeze the rest."""
    for stage, _, p in _iter_params(model):
        p.requires_grad_(phase.lr_mult.get(stage, 0.0) > 0)


def param_groups(
    model: nn.Module,
    phase: Phase,
    lr: float,
    weight_decay: float,
    skip: set[tuple[str, bool]] | None = None,
) -> list[dict]:
    """AdamW groups for the phase's trainable parameters: one per stage and decay kind.

    Biases and normalisation weights (1-D tensors) get no weight decay. Each group carries
    ``stage`` and ``base_lr`` (LR before the schedule); groups whose (stage, decay) key is in
    ``skip`` (already in the optimizer) are left out.
    """
    groups: dict[tuple[str, bool], dict] = {}
    for stage, _, p in _iter_params(model):
        mult = phase.lr_mult.get(stage, 0.0)
        key = (stage, p.ndim > 1)
        if mult <= 0 or not p.requires_grad or (skip and key in skip):
            continue
        group = groups.setdefault(
            key,
            {
                "params": [],
                "lr": lr * mult,
                "base_lr": lr * mult,
                "weight_decay": weight_decay if key[1] else 0.0,
                "stage": stage,
                "decay": key[1],
            },
        )
        group["params"].append(p)
    return list(groups.values())


def stage_lrs(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The current learning rate of each stage's parameter groups (as :func:`param_groups`
    made them), in the optimizer's order."""
    out: dict[str, float] = {}
    for g in optimizer.param_groups:
        out[g["stage"]] = max(out.get(g["stage"], 0.0), float(g["lr"]))
    return out


def trainable_per_phase(model: nn.Module, plan: Plan) -> list[int]:
    """Trainable parameter count in each phase; leaves the model in the first phase."""
    counts = []
    for phase in plan.phases:
        apply_phase(model, phase)
        counts.append(sum(p.numel() for p in model.parameters() if p.requires_grad))
    apply_phase(model, plan.phases[0])
    return counts
