"""Gather the evidence for a set of candidate backbones on the data a config describes:
shared by ``headstart recommend`` and ``train --strategy auto``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from headstart.backbones.availability import offline_status
from headstart.backbones.registry import get_spec, list_backbones
from headstart.config import TrainConfig
from headstart.errors import ConfigError
from headstart.recommend.domain import domain_evidence
from headstart.recommend.evidence import backbone_evidence, throughput
from headstart.recommend.pilot import pilot_fits, run_pilot
from headstart.recommend.ranking import Recommendation


def parse_budget(text: str) -> float:
    """Seconds in ``90s``, ``15m``, ``1.5h`` or a bare number of minutes.

    >>> parse_budget("15m"), parse_budget("1.5h"), parse_budget("90s"), parse_budget("20")
    (900.0, 5400.0, 90.0, 1200.0)
    """
    units = {"s": 1.0, "m": 60.0, "h": 3600.0}
    text = text.strip().lower()
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 60.0)
    except ValueError:
        raise ConfigError(
            f"ConfigError: --budget {text!r}; expected a time such as 15m, 1h or 90s."
        ) from None
    if value <= 0:
        raise ConfigError(f"ConfigError: --budget {text!r} must be more than zero.")
    return value


def candidates(cfg: TrainConfig, names: Sequence[str] | None) -> tuple[list[str], dict[str, str]]:
    """(usable backbones, skipped ones with the reason): those whose weights are here."""
    skipped, usable = {}, []
    given = cfg.model.weights not in (None, "default")  # --weights names them for every one
    for name in names or [s.name for s in list_backbones()]:
        spec = get_spec(name)  # an unknown name fails here, with the list
        status = offline_status(spec)
        if status.startswith("yes") or given or spec.default_weights == "none":
            usable.append(name)
        else:
            skipped[name] = f"no weights on this machine ({status})"
    if not usable:
        raise ConfigError(
            "ConfigError: none of the candidate backbones has its weights on this machine; "
            "`headstart backbones` says how to get them."
        )
    return usable, skipped


def recommend(
    cfg: TrainConfig,
    names: Sequence[str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    budget_s: float | None = None,
) -> Recommendation:
    """The evidence for ``names`` (default: every backbone with local weights) on ``cfg``'s
    data, ranked (``cfg`` is resolved with the probe strategy)."""
    from headstart.training.members import member_config
    from headstart.training.setup import build_backbone, prepare_data, resolve_config

    given = cfg  # the evidence's probes leave out what only a trained backbone uses
    cfg = resolve_config(member_config(cfg, {"strategy.name": "probe"})[0])
    usable, skipped = candidates(cfg, names)
    ready = prepare_data(cfg, echo=echo, progress=progress)
    evidence, built = [], {}
    for name in usable:
        white = ready.backbone.preprocessing.white_level  # the data's, for every candidate
        built[name] = build_backbone(cfg.with_overrides({"model.backbone": name}), white)
        e = backbone_evidence(cfg, replace(ready, backbone=built[name]), progress)
        echo(f"{name}: evidence in {e.seconds:.0f} s")
        evidence.append(e)
    speed = throughput(built, cfg.optim.batch_size, ready.device, ready.precision.autocast)
    evidence = [replace(e, images_per_s=speed[e.backbone]) for e in evidence]
    rec = Recommendation(evidence, skipped, budget_s)
    pick = cfg.with_overrides({"model.backbone": rec.best.backbone})
    rec.domain = domain_evidence(pick, replace(ready, backbone=built[rec.best.backbone]), progress)
    if rec.domain is not None:
        echo(f"{rec.best.backbone}: multi-layer and BatchNorm evidence in "
             f"{rec.domain.seconds:.0f} s")  # fmt: skip
    if pilot_fits(rec.best, budget_s):
        base = given.with_overrides({"strategy.name": "partial", "strategy.lr": None})
        rec.pilot = run_pilot(base, rec.best.backbone, ready.split, progress)
        echo(f"{rec.best.backbone}: pilot of partial in {rec.pilot.seconds:.0f} s")
    return rec
