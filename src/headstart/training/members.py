"""The members of a race: the strategies ``compare`` and ``cv`` train, or the picks
``--strategy auto`` may make, each from one shared config.

A member leaves out the options it has nothing to apply to, and says so: a probe's backbone
never trains (``--drop-path``), its cached features have no area to paste a box into
(``--cutmix``), and a multi-layer probe solves its head exactly, with no steps to blend,
average or decay (``--mixup``, ``--ema``, ``--weight-decay``, ``--lr auto``). A single
``train`` refuses those options instead, since there they can only be a mistake; in a race
they are meant for the members that train a backbone. Anything else a member refuses stops
the whole race before any member trains."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from headstart.config import RANGES, TrainConfig
from headstart.errors import ConfigError

# the options a member may leave out, and the value that turns each off (the option's name
# comes from the config's one table of options, RANGES)
_OFF = {
    "model.drop_path": None,
    "optim.cutmix": 0.0,
    "optim.mixup": 0.0,
    "optim.ema": None,
    "optim.weight_decay": None,
    "strategy.lr": None,  # --lr auto
}
_OPTION = {key: option for key, option, _, _ in RANGES if key in _OFF}


def unused(cfg: TrainConfig) -> list[str]:
    """The dotted keys of the options set in ``cfg`` that its strategy has nothing to apply to."""
    s, m, o = cfg.strategy, cfg.model, cfg.optim
    if s.name != "probe":
        return []
    keys = ["model.drop_path"] if m.drop_path else []
    if not cfg.data.cache:
        return keys
    keys += ["optim.cutmix"] if o.cutmix else []
    if m.layers == "all":
        keys += ["optim.mixup"] if o.mixup else []
        keys += [k for k in ("optim.ema", "optim.weight_decay") if cfg.value(k) is not None]
        keys += ["strategy.lr"] if s.lr == "auto" else []
    return keys


def member_config(cfg: TrainConfig, choice: dict[str, Any]) -> tuple[TrainConfig, str | None]:
    """``cfg`` with a member's ``choice`` (config overrides) and without the options that
    member has nothing to apply to; with a note naming them, or None."""
    member = cfg.with_overrides(choice)
    keys = unused(member)
    if not keys:
        return member, None
    shown = ", ".join(_shown(member, k) for k in keys)
    what = "a multi-layer probe" if member.model.layers == "all" else "a probe"
    them = "them" if len(keys) > 1 else "it"
    note = f"note: {what} has nothing to apply {shown} to; this member trains without {them}."
    return member.with_overrides({k: _OFF[k] for k in keys}), note


def check_choices(cfg: TrainConfig, choices: Sequence[dict[str, Any]], what: str) -> None:
    """Validate ``cfg`` under each of ``choices`` (config overrides) before any trains: the
    members of ``compare`` and ``cv``, or every pick ``--strategy auto`` can make. An option
    one of them refuses stops at once, not after the others (or the evidence) have run."""
    from headstart.training.setup import resolve_config

    for choice in choices:
        try:
            resolve_config(member_config(cfg, choice)[0])
        except ConfigError as e:
            shown = " ".join(f"{k.rpartition('.')[2]}={v}" for k, v in choice.items())
            raise ConfigError(f"{e} ({what} may train {shown}.)") from None


def _shown(cfg: TrainConfig, key: str) -> str:
    value = cfg.value(key)
    return f"{_OPTION[key]} {value if isinstance(value, str) else f'{value:g}'}"
