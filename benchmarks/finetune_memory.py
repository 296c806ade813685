"""Where a fine-tune's resident memory goes: one training step (forward and backward) of
EfficientNet-Lite0 at 224 px over 32 images, channels-last: in one batch; with timm's
gradient checkpointing (each stage's activations recomputed in the backward pass instead of
kept); and accumulated (``--accumulate 4``: four batches of 8, their gradients summed).
Each configuration runs in a process of its own, in turn, twice; the peak is the process's
resident high-water mark above its level before the first step, per image of a batch.

    .venv/bin/python benchmarks/finetune_memory.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

BATCH, SIZE, ACCUMULATE = 32, 224, 4
NAMES = ("plain", "checkpointed", "accumulated")


def one(name: str) -> None:
    """Three steps of 32 images in this process; prints the peak above the start, per image
    of a batch, and the best step."""
    import torch

    from headstart import tune_allocator
    from headstart.backbones import create_backbone

    tuned = tune_allocator()  # as every command does; HEADSTART_MALLOC=system: untuned
    model = create_backbone("tf_efficientnet_lite0", "default").module.train()
    model = model.to(memory_format=torch.channels_last)
    model.set_grad_checkpointing(name == "checkpointed")
    parts = ACCUMULATE if name == "accumulated" else 1
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps = []
    for _ in range(3):
        t = time.perf_counter()
        for chunk in x.chunk(parts):  # the loop's accumulation: each part's share of the loss
            (model(chunk).float().sum() / parts).backward()
        steps.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    step = min(steps[1:])
    batch = BATCH // parts
    print(f"{name:<12} batch {batch:2d} x {parts}  peak +{peak:5.0f} MB  "
          f"{peak / batch:4.0f} MB/image of a batch  step {step:.2f} s  "
          f"allocator tuned {tuned}")  # fmt: skip


def main() -> None:
    """Every configuration, in turn, twice, each in a fresh process."""
    if len(sys.argv) > 1:
        one(sys.argv[1])
        return
    for round_ in (1, 2):
        for name in NAMES:
            print(f"round {round_} ", end="", flush=True)
            subprocess.run([sys.executable, __file__, name], check=True)


if __name__ == "__main__":
    main()
