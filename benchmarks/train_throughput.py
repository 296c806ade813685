"""Fine-tune throughput: headstart's training pipeline against the model's raw
forward+backward on tensors already in memory, same model and batch size, one process, on
the default device (the GPU where there is one); in fp32 and in the precision ``auto`` picks
there (bf16 on this CPU and on recent GPUs), with ``torch.compile``, and with ``--ema`` (the
weights' moving average updated after every step).

Pipeline: the loaders `headstart train DATA --strategy finetune` builds (images from the
decoded-image cache, augmented) driven by the training loop (`fit`: AdamW groups, schedule,
clipping, BatchNorm policy, early-stopping bookkeeping). The first epoch decodes every image
into the cache; later epochs read it. Images per second count the training part of an epoch
(validation excluded). Raw: the same model, optimizer groups, BatchNorm policy, clipping and
batch size, looping forward + loss + backward + step over the training images preprocessed
into memory, under the same autocast. Every variant runs once per round, in turn, so all
see the same machine conditions; compile's one-time compilation is timed apart.

    .venv/bin/python benchmarks/train_throughput.py [--data ../shared/datasets/hymenoptera]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from memory import children_peak_mb, peak_mb, reset_peak

from headstart import tune_allocator
from headstart.backbones import create_backbone
from headstart.cache import Cache
from headstart.config import TrainConfig
from headstart.data import ImageDataset, eval_transform, load_split
from headstart.finetune import apply_bn_policy
from headstart.model import DEFAULT_TASK, Classifier
from headstart.training.device import images_to, resolve_device, to_device
from headstart.training.inputs import make_inputs
from headstart.training.loop import enter_phase, fit
from headstart.training.precision import auto_precision, resolve_precision
from headstart.training.setup import default_lr, plan_for, resolve_config

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"


def main() -> None:
    """Alternate pipeline and raw epochs; print images/s of each and the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=2, help="pipeline/raw epoch pairs")
    args = ap.parse_args()
    # as every command does; HEADSTART_MALLOC=system measures the untuned allocator
    print(f"allocator tuned: {tune_allocator()}")
    over = {"data.root": str(args.data.resolve()), "strategy.name": "finetune"}
    cfg = resolve_config(TrainConfig().with_overrides(over))
    device = resolve_device()  # the GPU where there is one
    cache = Cache(Path(tempfile.mkdtemp(prefix="train-throughput-")) / "cache")
    bb = create_backbone(cfg.model.backbone, cfg.model.weights)
    plan = plan_for(cfg, bb)
    split = load_split(cfg.data.root, cache=cache)
    cfg = cfg.with_overrides({"strategy.lr": default_lr(cfg, split)})  # the data-scaled default
    n = len(split.train)
    model = Classifier(bb.module, bb.num_features, {DEFAULT_TASK: len(split.classes)},
                       family=bb.spec.family)  # fmt: skip
    model = to_device(model, device)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"data {cfg.data.root}, finetune, batch {cfg.optim.batch_size}, {n} training images, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, device "
          f"{device}{gpu}")  # fmt: skip

    def pipeline_epoch(
        use_cache: bool, precision: str, compiled: bool = False, ema: bool = False
    ) -> float:
        gen = torch.Generator().manual_seed(0)
        inputs = make_inputs(cfg, bb, plan, split, device, gen, cache if use_cache else None, False)
        one = replace(cfg.optim, epochs=1, patience=None, ema=1.0 if ema else None)
        result = fit(model, plan, inputs.train, inputs.val, one, cfg.strategy.lr, device,
                     progress=False, precision=resolve_precision(precision, device),
                     compile=compiled)  # fmt: skip
        return n / result.history[0].train_seconds

    # raw: the training images preprocessed into memory, the same optimizer groups
    ds = ImageDataset(split.train, eval_transform(bb.preprocessing))
    images = torch.stack([ds[i][0] for i in range(n)])
    targets = torch.tensor([s.target for s in split.train])
    bs = cfg.optim.batch_size
    batches = [(images_to(images[i : i + bs], device), targets[i : i + bs])
               for i in range(0, n, bs)]  # fmt: skip
    optimizer = enter_phase(model, None, plan.phases[0], cfg.strategy.lr, 0.01, 0)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    compiled_model = torch.compile(model)

    def raw_epoch(precision: str, compiled: bool = False) -> float:
        net = compiled_model if compiled else model
        resolved = resolve_precision(precision, device)
        model.train()
        apply_bn_policy(model, plan.bn)
        start = time.perf_counter()
        with resolved.training(model):  # what the pipeline's steps run in
            for x, y in batches:
                with resolved.autocast():
                    loss = nn.functional.cross_entropy(net(x)[DEFAULT_TASK], y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return n / (time.perf_counter() - start)

    precisions = ["fp32", *{auto_precision(device)} - {"fp32"}]  # and what auto trains in
    best = precisions[-1]
    reset_peak()
    first = pipeline_epoch(True, "fp32")
    print(f"pipeline, epoch 1 (decoding into the cache)   {first:6.2f} img/s")
    for p in precisions:
        raw_epoch(p)  # warm-up of the raw loop's optimizer state and autocast
    start = time.perf_counter()
    raw_epoch(best, compiled=True)
    print(f"raw {best} compiled: first epoch (compiling) {time.perf_counter() - start:.0f} s")
    pipeline_epoch(True, best, compiled=True)  # the pipeline's own compilation
    variants = [*(f"pipeline {p}" for p in precisions), *(f"raw {p}" for p in precisions),
                f"pipeline {best} compiled", f"raw {best} compiled",
                f"pipeline {best} ema"]  # fmt: skip
    got: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(args.rounds):
        for v in variants:
            kind, p, *rest = v.split()
            compiled = rest == ["compiled"]
            if kind == "raw":
                got[v].append(raw_epoch(p, compiled=compiled))
            else:
                got[v].append(pipeline_epoch(True, p, compiled=compiled, ema=rest == ["ema"]))
        print(f"round {r + 1}: " + ", ".join(f"{v} {got[v][-1]:.2f}" for v in variants),
              flush=True)  # fmt: skip
    print(f"pipeline, --no-cache (JPEG decode each epoch) {pipeline_epoch(False, best):6.2f} img/s")
    print(f"peak RSS {peak_mb():.0f} MB (main process); "
          f"DataLoader workers' largest {children_peak_mb():.0f} MB")  # fmt: skip
    mean = {v: statistics.mean(x) for v, x in got.items()}
    for v in variants:
        print(f"mean {v:<28} {mean[v]:6.2f} img/s")
    ratios = {f"pipeline/raw {p}": mean[f"pipeline {p}"] / mean[f"raw {p}"] for p in precisions}
    if best != "fp32":
        ratios[f"{best}/fp32 pipeline"] = mean[f"pipeline {best}"] / mean["pipeline fp32"]
        ratios[f"{best}/fp32 raw"] = mean[f"raw {best}"] / mean["raw fp32"]
    ratios["compile/eager pipeline"] = mean[f"pipeline {best} compiled"] / mean[f"pipeline {best}"]
    ratios["compile/eager raw"] = mean[f"raw {best} compiled"] / mean[f"raw {best}"]
    ratios["ema/plain pipeline"] = mean[f"pipeline {best} ema"] / mean[f"pipeline {best}"]
    print("ratios: " + "  ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
