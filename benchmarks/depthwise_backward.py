"""bf16 training on a CPU with and without depthwise convolutions' backward pass in float32
(:mod:`headstart.training.depthwise`, forced on here whatever this CPU measures), against
fp32: the same fine-tune (`headstart train
DATA --strategy finetune --epochs 3`, seed 0) three ways, in turn, for --rounds rounds, in one
process; training images per second (validation excluded) and the final validation accuracy.

    .venv/bin/python benchmarks/depthwise_backward.py [--data ../shared/datasets/hymenoptera]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
from pathlib import Path

import torch

from headstart import tune_allocator
from headstart.config import TrainConfig
from headstart.training import precision as prec
from headstart.training import train
from headstart.training.depthwise import bf16_backward_is_slow, float32_backward

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"
VARIANTS = {"fp32": ("fp32", True), "bf16 plain": ("bf16", False),
            "bf16 depthwise-fp32-backward": ("bf16", True)}  # fmt: skip


def main() -> None:
    """Alternate the three variants; print each run's rate and the ratios of the means."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    # as every command does; HEADSTART_MALLOC=system measures the untuned allocator
    print(f"allocator tuned: {tune_allocator()}")
    tmp = Path(tempfile.mkdtemp(prefix="depthwise-"))
    as_built = prec.Precision.training

    def forced(self: prec.Precision, model: torch.nn.Module):  # bf16: always float32's backward
        return float32_backward(model) if self.mixed else as_built(self, model)

    def plain(self: prec.Precision, model: torch.nn.Module):
        return contextlib.nullcontext()

    rates: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(args.rounds):
        for name, (precision, depthwise) in VARIANTS.items():
            prec.Precision.training = forced if depthwise else plain  # type: ignore[method-assign]
            over = {"data.root": str(args.data.resolve()), "strategy.name": "finetune",
                    "precision": precision, "optim.epochs": args.epochs,
                    "out": str(tmp / f"{r}-{name.replace(' ', '_')}"),
                    "data.cache_dir": str(tmp / "cache")}  # fmt: skip
            done = train(TrainConfig().with_overrides(over), progress=False, echo=lambda _: None)
            fit = done.fit
            seconds = sum(h.train_seconds for h in fit.history)
            rates[name].append(len(fit.history) * len(done.split.train) / seconds)
            print(f"round {r + 1} {name:<29} {rates[name][-1]:6.2f} img/s  "
                  f"val_acc {fit.history[-1].val_acc:.2%}", flush=True)  # fmt: skip
    prec.Precision.training = as_built  # type: ignore[method-assign]
    print(f"this CPU's depthwise backward measured clearly slower in bf16: "
          f"{bf16_backward_is_slow()} (what training uses)")  # fmt: skip
    mean = {v: statistics.mean(x) for v, x in rates.items()}
    print("ratios: " + "  ".join(f"{v}/fp32 {mean[v] / mean['fp32']:.2f}x" for v in VARIANTS
                                 if v != "fp32"))  # fmt: skip


if __name__ == "__main__":
    main()
