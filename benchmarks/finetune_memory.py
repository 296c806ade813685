"""Where a fine-tune's resident memory goes: one training step (forward and backward) of
EfficientNet-Lite0 at 224 px, batch 32, channels-last, without and with timm's gradient
checkpointing (each stage's activations recomputed in the backward pass instead of kept).
Each configuration runs in a process of its own, in turn, twice; the peak is the process's
resident high-water mark above its level before the first step.

    .venv/bin/python benchmarks/finetune_memory.py
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time

BATCH, SIZE = 32, 224


def one(checkpointing: bool) -> None:
    """Three steps in this process; prints the peak above the start and the best step."""
    import torch

    from headstart.backbones import create_backbone

    model = create_backbone("tf_efficientnet_lite0", "default").module.train()
    model = model.to(memory_format=torch.channels_last)
    model.set_grad_checkpointing(checkpointing)
    x = torch.randn(BATCH, 3, SIZE, SIZE).contiguous(memory_format=torch.channels_last)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    steps = []
    for _ in range(3):
        t = time.perf_counter()
        model(x).float().sum().backward()
        steps.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    name = "checkpointed" if checkpointing else "plain"
    step = min(steps[1:])
    print(f"{name:<13} peak +{peak:5.0f} MB  {peak / BATCH:4.0f} MB/image  step {step:.2f} s")


def main() -> None:
    """Both configurations, in turn, twice, each in a fresh process."""
    if len(sys.argv) > 1:
        one(sys.argv[1] == "checkpointed")
        return
    for round_ in (1, 2):
        for name in ("plain", "checkpointed"):
            print(f"round {round_} ", end="", flush=True)
            subprocess.run([sys.executable, __file__, name], check=True)


if __name__ == "__main__":
    main()
