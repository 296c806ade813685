"""Precision at equal accuracy: the same fine-tune (`headstart train DATA --strategy
finetune`, the defaults, seed 0) in fp32 and in bf16 (and fp16 on a CUDA GPU), and the
cached probe's cold pass in each, one after the other in one process, on the default device;
wall time, validation accuracy with its 95% interval, and the ratios. bf16 needs a CPU with
native bfloat16 (or a GPU).

    .venv/bin/python benchmarks/precision.py [--data ../shared/datasets/hymenoptera]
        [--labels CSV --tasks T] [--epochs 10]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from headstart import tune_allocator
from headstart.config import TrainConfig
from headstart.training import train
from headstart.training.device import resolve_device

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"


def run(overrides: dict, out: Path) -> tuple[float, float, tuple[float, float] | None]:
    """(wall seconds, best val accuracy, its interval) of one quiet training run."""
    cfg = TrainConfig().with_overrides({**overrides, "out": str(out)})
    start = time.perf_counter()
    result = train(cfg, progress=False, echo=lambda _: None)
    best = result.fit.history[result.fit.best_epoch - 1]
    return time.perf_counter() - start, best.val_acc, best.val_acc_ci


def main() -> None:
    """Probe (empty cache) and fine-tune in each precision; print the table and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--labels", type=Path)
    ap.add_argument("--tasks")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    # as every command does; HEADSTART_MALLOC=system measures the untuned allocator
    print(f"allocator tuned: {tune_allocator()}")
    tmp = Path(tempfile.mkdtemp(prefix="precision-"))
    data = (
        {"data.labels": str(args.labels), "data.tasks": args.tasks.split(",")}
        if args.labels
        else {"data.root": str(args.data.resolve())}
    )
    got = {}
    precisions = ("fp32", "bf16", "fp16") if torch.cuda.is_available() else ("fp32", "bf16")
    device = resolve_device()
    print(f"device {device}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda"
                                else ""), flush=True)  # fmt: skip
    for strategy in ("probe", "finetune"):
        for precision in precisions:
            cache = str(tmp / f"cache-{precision}")
            over = {**data, "strategy.name": strategy, "precision": precision,
                    "optim.epochs": args.epochs, "data.cache_dir": cache}  # fmt: skip
            seconds, acc, ci = run(over, tmp / f"{strategy}-{precision}")
            got[strategy, precision] = seconds, acc
            interval = f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else ""
            print(f"{strategy:<9} {precision}: {seconds:7.1f} s  val_acc {acc:.2%}{interval}",
                  flush=True)  # fmt: skip
    ratios = "  ".join(
        f"{s} fp32/{p} time {got[s, 'fp32'][0] / got[s, p][0]:.2f}x "
        f"(accuracy {100 * (got[s, p][1] - got[s, 'fp32'][1]):+.2f} points)"
        for s in ("probe", "finetune")
        for p in precisions[1:]
    )
    print(f"ratios: {ratios}")


if __name__ == "__main__":
    main()
