"""Probe speed: the naive tutorial loop against headstart's cached probe, in one process.

(a) naive: PyTorch's transfer-learning tutorial, "ConvNet as fixed feature extractor"
    (https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html), with the offline
    backbone: ImageFolder, batch 4, 4 workers, SGD(lr=1e-3, momentum=0.9) on the new
    classifier, StepLR(7, 0.1); every epoch runs the frozen backbone on augmented train
    batches and evaluates on val; the best val epoch is kept.
(b) headstart's probe (`headstart train DATA`: its head solved on the cached features) with an
    empty cache, then
(c) the same with the cache it left (a second run: another seed, head or fold), three
    times: the median is the figure (a warm probe is a second of Python, and one run can
    catch the shared machine busy: 0.98-1.26 s over five runs in one process).
(d) the floor: one forward pass per image (decode + preprocess + backbone, headstart's
    loader and layout; the training images in the probe's precision, the validation images
    in float32, the precision runs are scored in), which no cold probe can beat.

Prints wall seconds, best val accuracy and peak resident memory of each, then the ratios.

    .venv/bin/python benchmarks/probe_speed.py [--data ../shared/datasets/hymenoptera]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision import transforms as T

sys.path.insert(0, str(Path(__file__).parent))
from memory import children_peak_mb, peak_mb, reset_peak

from headstart import tune_allocator
from headstart.backbones import create_backbone
from headstart.config import TrainConfig
from headstart.data import ImageDataset, eval_transform, load_split
from headstart.training import train
from headstart.training.device import frozen_pass_workers, images_to, to_device
from headstart.training.precision import resolve_precision, serving

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"
WARM_RUNS = 3


def naive_probe(data: Path, epochs: int) -> float:
    """The tutorial's loop, verbatim in spirit; returns the best val accuracy."""
    bb = create_backbone("tf_efficientnet_lite0", imagenet_head=True)
    prep = bb.preprocessing
    tf = {
        "train": T.Compose([T.RandomResizedCrop(prep.input_size), T.RandomHorizontalFlip(),
                            T.ToTensor(), T.Normalize(prep.mean, prep.std)]),
        "val": T.Compose([T.Resize(prep.resize_size), T.CenterCrop(prep.input_size),
                          T.ToTensor(), T.Normalize(prep.mean, prep.std)]),
    }  # fmt: skip
    sets = {x: datasets.ImageFolder(data / x, tf[x]) for x in ("train", "val")}
    loaders = {
        x: DataLoader(sets[x], batch_size=4, shuffle=True, num_workers=4) for x in ("train", "val")
    }
    model = bb.module
    for p in model.parameters():
        p.requires_grad = False
    model.classifier = nn.Linear(model.classifier.in_features, len(sets["train"].classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.classifier.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    best_acc, best = 0.0, copy.deepcopy(model.state_dict())
    for _ in range(epochs):
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            correct = 0
            for inputs, labels in loaders[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                correct += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
            acc = correct / len(sets[phase])
            if phase == "val" and acc > best_acc:
                best_acc, best = acc, copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    return best_acc


def headstart_probe(data: Path, epochs: int, out: Path) -> float:
    """``headstart train DATA --epochs N`` in-process; returns the restored epoch's val acc."""
    cfg = TrainConfig().with_overrides(
        {"data.root": str(data), "optim.epochs": epochs, "out": str(out)}
    )
    return train(cfg, overwrite=True, echo=lambda s: None, progress=False).fit.best.val_acc


@torch.inference_mode()
def one_forward_pass(data: Path) -> int:
    """Decode, preprocess and run the backbone once over every usable image: the training
    images in the probe's precision, the validation images in the serving one, as the
    probe computes them."""
    bb = create_backbone("tf_efficientnet_lite0")
    split = load_split(data)
    cpu = torch.device("cpu")
    model = to_device(bb.module, cpu).eval()
    passes = [(split.train, resolve_precision("auto", cpu)), (split.val, serving(cpu))]
    for samples, precision in passes:
        ds = ImageDataset(samples, eval_transform(bb.preprocessing))
        loader = DataLoader(ds, batch_size=32, num_workers=frozen_pass_workers())  # as the probe
        for images, _ in loader:
            with precision.autocast():
                model(images_to(images, cpu))
    return len(split.train) + len(split.val)


def measure(label: str, fn, *args):
    """Run ``fn``, print and return (seconds, result)."""
    reset_peak()
    start = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - start
    acc = f"best val acc {result:.4f}" if isinstance(result, float) else f"{result} images"
    print(f"{label:<44} {seconds:8.2f} s   {acc:<22} peak RSS {peak_mb():7.0f} MB", flush=True)
    return seconds, result


def main() -> None:
    """Run the four measurements and print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    # as every command does; HEADSTART_MALLOC=system measures the untuned allocator
    print(f"allocator tuned: {tune_allocator()}")
    data = args.data.resolve()
    work = Path(tempfile.mkdtemp(prefix="probe-speed-"))
    os.environ["HEADSTART_CACHE"] = str(work / "cache")  # cold: nothing cached yet
    print(f"data {data}, {args.epochs} epochs, {torch.get_num_threads()} torch threads, "
          f"{os.cpu_count()} cores")  # fmt: skip

    naive_s, naive_acc = measure("(a) naive probe (tutorial loop)", naive_probe, data, args.epochs)
    cold_s, cold_acc = measure("(b) headstart probe, cold cache", headstart_probe, data,
                               args.epochs, work / "cold")  # fmt: skip
    warm = [measure(f"(c) headstart probe, warm cache, run {i + 1}", headstart_probe, data,
                    args.epochs, work / f"warm{i}")[0] for i in range(WARM_RUNS)]  # fmt: skip
    warm_s = statistics.median(warm)  # a second of Python: one run is at the mercy of the day
    print(f"(c) warm: median of {WARM_RUNS} runs {warm_s:.2f} s")
    floor_s, _ = measure("(d) floor: one forward pass per image", one_forward_pass, data)
    print(f"DataLoader workers' peak RSS (largest child): {children_peak_mb():.0f} MB")
    print(
        f"ratios: naive/cold {naive_s / cold_s:.1f}x   naive/warm {naive_s / warm_s:.0f}x   "
        f"cold/floor {cold_s / floor_s:.2f}x   accuracy cold - naive "
        f"{(cold_acc - naive_acc) * 100:+.2f} points"
    )


if __name__ == "__main__":
    main()
