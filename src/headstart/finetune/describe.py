"""What a strategy does to a backbone: stages, parameter counts, trainable sets and LRs."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from headstart.finetune.plans import Plan, stage_params
from headstart.tables import text_table


@dataclass(frozen=True)
class StageRow:
    """One stage: its parameter count and, per phase, its LR (None when frozen)."""

    stage: str
    params: int
    lrs: tuple[float | None, ...]


def describe(model: nn.Module, plan: Plan, lr: float) -> list[StageRow]:
    """Per stage of ``model``: parameter count and its LR in each phase of ``plan``."""
    rows = []
    for stage, params in stage_params(model).items():
        lrs = tuple(
            lr * phase.lr_mult[stage] if phase.lr_mult.get(stage, 0) > 0 else None
            for phase in plan.phases
        )
        rows.append(StageRow(stage, sum(p.numel() for _, p in params), lrs))
    return rows


def format_table(rows: list[StageRow], plan: Plan) -> str:
    """An aligned text table: stage, params, then one LR column per phase, then totals."""
    heads = [f"epoch {p.start_epoch + 1}+" for p in plan.phases]
    table = [["stage", "params", *heads]]
    for r in rows:
        table.append([r.stage, f"{r.params:,}", *[f"{v:.1e}" if v else "frozen" for v in r.lrs]])
    total = sum(r.params for r in rows)
    trainable = [sum(r.params for r in rows if r.lrs[i]) for i in range(len(plan.phases))]
    table.append(["total / trainable", f"{total:,}", *[f"{t:,}" for t in trainable]])
    return text_table(table, footer=True)
