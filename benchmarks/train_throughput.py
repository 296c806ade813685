"""Fine-tune throughput: headstart's training pipeline against the model's raw
forward+backward on tensors already in memory, same model and batch size, one process.

Pipeline: `headstart train DATA --strategy finetune --epochs 3`; the first epoch decodes every
image into the decoded-image cache, the next two read it (the steady state, averaged).
Images per second count the training part of an epoch (validation excluded). For reference
it also runs one epoch with --no-cache (JPEG decoding every epoch).
Raw: the same Classifier, AdamW groups, BatchNorm policy, gradient clipping and batch size,
looping forward + loss + backward + step over the training images already preprocessed into
memory. The ratio pipeline/raw is the share of the hardware the pipeline delivers.

    .venv/bin/python benchmarks/train_throughput.py [--data ../shared/datasets/hymenoptera]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from memory import children_peak_mb, peak_mb, reset_peak

from headstart.backbones import create_backbone
from headstart.config import TrainConfig
from headstart.data import ImageDataset, eval_transform, load_split
from headstart.finetune import apply_bn_policy
from headstart.model import DEFAULT_TASK, Classifier
from headstart.training import train
from headstart.training.device import images_to, to_device
from headstart.training.loop import enter_phase
from headstart.training.train import plan_for, resolve_config

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"


def pipeline(cfg: TrainConfig, epochs: int, out: Path, cache: bool) -> list[float]:
    """Images/s of each epoch's training part through ``train()``."""
    cfg = cfg.with_overrides({"optim.epochs": epochs, "out": str(out), "data.cache": cache})
    result = train(cfg, overwrite=True, echo=lambda s: None, progress=False)
    n = len(result.split.train)
    return [n / h.train_seconds for h in result.fit.history]


def raw(cfg: TrainConfig, data: Path) -> float:
    """Images/s of forward+backward+step on preprocessed tensors in memory."""
    cfg = resolve_config(cfg)
    device = torch.device("cpu")
    bb = create_backbone(cfg.model.backbone, cfg.model.weights)
    split = load_split(data)
    ds = ImageDataset(split.train, eval_transform(bb.preprocessing))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    targets = torch.tensor([s.target for s in split.train])
    bs = cfg.optim.batch_size
    batches = [
        (images_to(images[i : i + bs], device), targets[i : i + bs])
        for i in range(0, len(images), bs)
    ]
    model = to_device(Classifier(bb.module, bb.num_features, {DEFAULT_TASK: 2},
                                 family=bb.spec.family), device)  # fmt: skip
    plan = plan_for(cfg, bb)
    optimizer = enter_phase(model, None, plan.phases[0], cfg.strategy.lr, 0.01, 0)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    apply_bn_policy(model, plan.bn)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = nn.functional.cross_entropy(model(x)[DEFAULT_TASK], y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()

    for x, y in batches:  # warm-up epoch (allocator, kernels, AdamW state), as the pipeline's
        step(x, y)
    start = time.perf_counter()
    for _ in range(2):  # two epochs, as the pipeline's steady state
        for x, y in batches:
            step(x, y)
    return 2 * len(images) / (time.perf_counter() - start)


def main() -> None:
    """Measure pipeline and raw throughput and print the ratio."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = ap.parse_args()
    data = args.data.resolve()
    work = Path(tempfile.mkdtemp(prefix="train-throughput-"))
    os.environ["HEADSTART_CACHE"] = str(work / "cache")
    cfg = TrainConfig().with_overrides({"data.root": str(data), "strategy.name": "finetune"})
    print(f"data {data}, finetune, batch {cfg.optim.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores")  # fmt: skip

    reset_peak()
    cold, *steady = pipeline(cfg, 3, work / "cached", cache=True)
    warm = len(steady) / sum(1 / x for x in steady)  # images/s over both epochs
    pipe_peak = peak_mb()
    print(f"pipeline, epoch 1 (decoding into the cache)   {cold:6.2f} img/s")
    print(f"pipeline, epochs 2-3 (decoded-image cache)    {warm:6.2f} img/s   "
          f"peak RSS {pipe_peak:.0f} MB")  # fmt: skip
    (nocache,) = pipeline(cfg, 1, work / "nocache", cache=False)
    print(f"pipeline, --no-cache (JPEG decode each epoch) {nocache:6.2f} img/s")
    reset_peak()
    raw_ips = raw(cfg, data)
    print(f"raw forward+backward, tensors in memory       {raw_ips:6.2f} img/s   "
          f"peak RSS {peak_mb():.0f} MB")  # fmt: skip
    print(f"DataLoader workers' peak RSS (largest child): {children_peak_mb():.0f} MB")
    print(f"ratio pipeline/raw {warm / raw_ips:.2f}   (--no-cache/raw {nocache / raw_ips:.2f})")


if __name__ == "__main__":
    main()
