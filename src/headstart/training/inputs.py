"""What the training loop reads: cached features of a frozen prefix, or images decoded once.

* A single-phase plan whose first stages are frozen (``probe``; ``partial``) trains on the
  frozen prefix's outputs, computed once per image and view and kept in the feature cache;
  the model then runs only the rest of the backbone (nothing, for a probe) and the heads.
* Everything else runs the backbone on images every epoch; with the cache on, the images
  come from the decoded-image cache, so JPEG decoding is paid once, not every epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from headstart.backbones import Backbone
from headstart.backbones.split import Chain, Cut, cut_backbone
from headstart.backbones.stages import HEAD
from headstart.cache import Cache, digest_of, module_digest
from headstart.cache.decoded import image_reader
from headstart.cache.features import FeatureSource, FeatureViews, cached_features
from headstart.config import TrainConfig
from headstart.data import (
    DataSplit,
    ImageDataset,
    eval_transform,
    pass_generator,
    train_transform,
)
from headstart.data.augment import SCALES
from headstart.errors import ConfigError
from headstart.finetune import Phase, Plan
from headstart.finetune.bn import BNShift, adapt_batchnorm, load_statistics
from headstart.finetune.bn import shift as bn_shift
from headstart.finetune.bn import statistics as bn_statistics
from headstart.multilayer import StageTaps
from headstart.training.device import (
    default_num_workers,
    frozen_pass_workers,
    images_to,
    to_device,
)
from headstart.training.distributed import (
    ShardSampler,
    barrier,
    per_process_batch,
    shard,
    world,
)
from headstart.training.fold import folded_batchnorm
from headstart.training.order import SeededOrder, balanced_weights
from headstart.training.precision import Precision, for_layers, resolve_precision, serving


@dataclass
class Inputs:
    """Loaders for the loop, the tail to run on cached features (None: images), and a
    description for the console and the manifest."""

    train: DataLoader
    val: DataLoader
    tail: Chain | None
    info: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """One line saying what the loop reads."""
        i = self.info
        if i["reads"] == "features":
            where = {"pooled": "pooled", MULTI: "every stage's output, pooled by mean and std"}.get(
                i["boundary"], f"before {i['boundary']}"
            )
            return (
                f"inputs: cached features ({where}; "
                f"{i['computed']} computed, {i['reused']} reused; "
                f"{i['views']} augmented view(s) per training image)"
            )
        return f"inputs: images ({i['why']})"


def feature_cut(
    backbone: Backbone, plan: Plan, taps: StageTaps | None = None
) -> tuple[Cut | None, str]:
    """Where the frozen prefix ends, or None and why the features cannot be cached. With
    ``taps`` (a multi-layer probe) the prefix is every stage's pooled output."""
    if taps is not None:
        return Cut(taps.raw, Chain([("taps", taps.normalize)]), MULTI), ""
    if len(plan.phases) != 1:
        return None, "the plan changes what is frozen between phases"
    trainable = [s for s, m in plan.phases[0].lr_mult.items() if m > 0]
    first = next((s for s in backbone.stages() if s in trainable), None)
    if first is None and HEAD not in trainable:
        return None, "nothing trains"
    if first == next(iter(backbone.stages())):
        return None, "every backbone stage trains"
    if plan.bn == "train":
        return None, "--bn train makes frozen BatchNorm layers depend on the batch"
    cut = cut_backbone(backbone.module, backbone.spec.family, first)
    if cut is None:
        return None, f"{backbone.spec.name} cannot be cut at {first}"
    return cut, ""


def make_inputs(
    cfg: TrainConfig,
    backbone: Backbone,
    plan: Plan,
    split: DataSplit,
    device: torch.device,
    generator: torch.Generator,
    cache: Cache | None,
    progress: bool = True,
    taps: StageTaps | None = None,
) -> Inputs:
    """The loaders a run trains on (see the module docstring for the choice). ``taps``: a
    multi-layer probe's; their standardisation is fitted on the training features here."""
    prep = backbone.preprocessing
    augment = train_transform(prep, preset=cfg.data.augment, color_jitter=cfg.data.color_jitter)
    cut, why = feature_cut(backbone, plan, taps) if cache is not None else (None, "--no-cache")
    if cut is not None:
        n_rows = len(split.train) * (1 + cfg.data.cached_views) + len(split.val)
        need = n_rows * _output_bytes(cut.prefix, backbone, device)
        if need > FEATURE_MEMORY_LIMIT:
            cut, why = None, f"they would take {need / 1e9:.1f} GB of memory (limit 2 GB)"
    if cache is not None and cut is not None:
        precision = resolve_precision(for_layers(cfg.precision, "all" if taps else "last"), device)
        val_precision = serving(device)  # validation reads what serving will compute
        weights = module_digest(backbone.module)  # hashes every weight: once
        sources = {
            p.name: FeatureSource(cfg.model.backbone, weights, prep.to_dict(), cut.boundary, p.name)
            for p in (precision, val_precision)
        }

        recipe = {"scale": SCALES.get(cfg.data.augment), "color_jitter": cfg.data.color_jitter}
        if cfg.data.augment != "photo":  # photo's recipe keeps the key it always had
            recipe["preset"] = cfg.data.augment
        views: list[Any] = ["clean"] + [["aug", i, recipe] for i in range(cfg.data.cached_views)]
        to_device(backbone.module, device).eval()
        stats = {"computed": 0, "reused": 0}

        def features(
            samples: list, transforms: list, names: list, at: Precision = precision
        ) -> torch.Tensor:
            computed = 0
            if world().active:  # each process fills its shard of the cache, then reads all
                _, computed = fill(shard(samples), transforms, names, at)
                barrier()
            out, more = fill(samples, transforms, names, at)
            stats["computed"] += computed + more
            stats["reused"] += len(samples) * len(names) - computed - more
            return out

        def fill(
            samples: list, transforms: list, names: list, at: Precision
        ) -> tuple[torch.Tensor, int]:
            return cached_features(
                cache,
                sources[at.name],
                cut.prefix,
                samples,
                transforms,
                names,
                device=device,
                batch_size=cfg.optim.batch_size,  # 32: 12.2 s for 397 images here, 64: 14.7 s
                num_workers=_pass_workers(cfg),
                progress=progress,
                to_input=images_to,
                autocast=at.autocast,
            )

        n, clean = len(split.train), [eval_transform(prep)]
        with folded_batchnorm(backbone.module):  # the frozen prefix only reads: fold it
            if precision == val_precision:  # one pass
                both = features(split.train + split.val, clean, ["clean"])
                train_x, val_x = both[:n], both[n:]
            else:
                train_x = features(split.train, clean, ["clean"])
                val_x = features(split.val, clean, ["clean"], val_precision)
            if len(views) > 1:
                augmented = features(split.train, [augment] * (len(views) - 1), views[1:])
                train_x = torch.cat([train_x, augmented], dim=1)
        if taps is not None:
            taps.fit_statistics(train_x[:, 0])  # the clean view's
        info = {"reads": "features", "boundary": cut.boundary, "views": len(views) - 1, **stats}
        # where the clean training features are: evaluate's label-error analysis refits the
        # head on them instead of running the backbone again
        info["features"] = {"cache": str(cache.root), "key": sources[precision.name].key("clean")}
        return Inputs(
            _loader(FeatureViews(train_x, split.train, True), cfg, True, generator, workers=0),
            _loader(FeatureViews(val_x, split.val, False), cfg, False, generator, workers=0),
            cut.tail,
            info,
        )  # fmt: skip
    read = image_reader(prep, cache)
    workers = cfg.data.num_workers
    if workers is None:  # chosen for this machine (the saved config stays portable)
        workers = default_num_workers(device, decoded=cache is not None)
    if taps is not None:
        raise ConfigError(f"ConfigError: --layers all reads cached features, but {why}.")
    info = {"reads": "images", "why": f"features not cached: {why}", "decoded_cache": bool(cache),
            "workers": workers}  # fmt: skip
    if cache is not None:
        info["why"] += "; decoded-image cache on"
    return Inputs(
        _loader(ImageDataset(split.train, augment, read), cfg, True, generator, workers),
        _loader(
            ImageDataset(split.val, eval_transform(prep), read), cfg, False, generator, workers
        ),
        None,
        info,
    )


def adapt_backbone(
    cfg: TrainConfig,
    backbone: Backbone,
    split: DataSplit,
    device: torch.device,
    cache: Cache | None,
    progress: bool = True,
) -> BNShift:
    """``--bn adapt``: re-estimate the backbone's BatchNorm statistics on the training
    images (clean, as evaluation sees them), or take them from the cache, keyed by the
    weights they start from, the preprocessing and the images' content."""
    prep = backbone.preprocessing
    before = bn_statistics(backbone.module)
    key = None
    if cache is not None:
        images = sorted(cache.digest(s.path) for s in split.train)
        key = digest_of(["bn-adapt", cfg.model.backbone, module_digest(backbone.module),
                         prep.to_dict(), images])  # fmt: skip
        found = cache.store("bn").get(key)
        if found is not None:
            load_statistics(backbone.module, torch.from_numpy(found))
            return replace(bn_shift(before, backbone.module), images=len(images), cached=True)
    read = image_reader(prep, cache)
    loader = DataLoader(
        ImageDataset(split.train, eval_transform(prep), read),
        batch_size=cfg.optim.batch_size,
        num_workers=_pass_workers(cfg),
        generator=pass_generator(),
    )
    to_device(backbone.module, device)
    adapt_batchnorm(
        backbone.module, (images_to(x, device) for x, _ in loader), len(split.train), progress
    )
    if cache is not None and key is not None:
        cache.store("bn").put(key, bn_statistics(backbone.module).numpy())
    return replace(bn_shift(before, backbone.module), images=len(split.train))


def frozen_inputs(
    cfg: TrainConfig,
    backbone: Backbone,
    split: DataSplit,
    device: torch.device,
    generator: torch.Generator,
    cache: Cache | None,
    progress: bool = True,
    taps: StageTaps | None = None,
) -> Inputs:
    """The frozen backbone's cached features of the clean images, as a probe reads them (no
    augmented views): what the warm head and ``recommend``'s evidence are fitted on."""
    probe = Plan("probe", [Phase(0, {HEAD: 1.0})], "frozen")
    clean = replace(cfg, data=replace(cfg.data, cached_views=0))
    return make_inputs(clean, backbone, probe, split, device, generator, cache, progress, taps)


MULTI = "all stages (mean, std)"  # the boundary name of a multi-layer probe's features
FEATURE_MEMORY_LIMIT = 2e9  # bytes of cached features held in memory while training


def _output_bytes(prefix: Callable, backbone: Backbone, device: torch.device) -> int:
    """Bytes of one image's prefix output (float32), from one forward pass on zeros."""
    size = backbone.preprocessing.input_size
    to_device(backbone.module, device).eval()  # fit() puts it back in train mode
    with torch.inference_mode():
        out = prefix(images_to(torch.zeros(1, 3, size, size), device))
    return out[0].numel() * 4


def _pass_workers(cfg: TrainConfig) -> int:
    """``--workers`` when given (0 keeps everything in-process), else one per core."""
    return cfg.data.num_workers if cfg.data.num_workers is not None else frozen_pass_workers()


def _loader(
    ds: Dataset, cfg: TrainConfig, shuffle: bool, gen: torch.Generator, workers: int
) -> DataLoader:
    """Training (``shuffle``) loaders draw a :class:`SeededOrder` from ``gen`` each epoch
    (class-balanced draws with ``--sampler balanced``); validation loaders have a generator
    of their own, so that a validation pass leaves the training order where it was."""
    weights = None
    if shuffle and cfg.data.sampler == "balanced":
        monitor = cfg.optim.monitor if cfg.optim.monitor != "mean" else None
        targets = getattr(ds, "targets", None) or [s.target for s in ds.samples]  # type: ignore[attr-defined]
        weights = balanced_weights(targets, monitor)
    sampler = SeededOrder(len(ds), gen, weights) if shuffle else None
    if not shuffle and world().active:
        sampler = ShardSampler(len(ds))  # type: ignore[assignment]
    return DataLoader(
        ds,
        batch_size=per_process_batch(cfg.optim.batch_size),
        sampler=sampler,  # type: ignore[arg-type]
        num_workers=workers,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        pin_memory=torch.cuda.is_available(),
        generator=gen if shuffle else pass_generator(),
    )
