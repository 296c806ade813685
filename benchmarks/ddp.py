"""DistributedDataParallel: the same fine-tune as one process and as N processes under
torchrun (gloo on a CPU, NCCL on GPUs), one after the other; training images per second
(from each run's metrics, validation excluded), wall time and the best validation accuracy
with its 95% interval, then the ratios. On a CPU the N processes share its cores (each gets
cores / N threads), so throughput measures DDP's overhead rather than a speed-up; on
several GPUs it measures the speed-up.

    .venv/bin/python benchmarks/ddp.py [--data ../shared/datasets/hymenoptera] [--nproc 2]
        [--epochs 10] [--strategy finetune]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"


def run(cmd: list[str], out: Path, threads: int) -> tuple[float, float, float, list | None]:
    """(wall s, train img/s, best val accuracy, its interval) of one training command."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    subprocess.run([*cmd, "--out", str(out)], check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    seconds = sum(e["train_seconds"] for e in epochs)
    images = manifest["data"]["train"] * len(epochs)
    m = manifest["metrics"]
    return wall, images / seconds if seconds else 0.0, m["val_acc"], m.get("val_acc_ci")


def main() -> None:
    """One process, then N; print each and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--strategy", default="finetune")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ddp-"))
    cores = os.cpu_count() or 1
    train = ["-m", "headstart", "--no-progress", "train", str(args.data.resolve()),
             "--strategy", args.strategy, "--epochs", str(args.epochs), "--cache-dir",
             str(tmp / "cache")]  # fmt: skip
    one = run([sys.executable, *train], tmp / "one", cores)
    many = run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc-per-node", str(args.nproc), *train], tmp / "many",
               max(1, cores // args.nproc))  # fmt: skip
    for name, (wall, speed, acc, ci) in (("1 process", one), (f"{args.nproc} processes", many)):
        interval = f" [{ci[0]:.1%}, {ci[1]:.1%}]" if ci else ""
        print(f"{name:<12} wall {wall:7.1f} s  train {speed:6.2f} img/s  val_acc {acc:.2%}"
              f"{interval}")  # fmt: skip
    print(
        f"ratios: {args.nproc}proc/1proc throughput {many[1] / one[1]:.2f}x  "
        f"wall {one[0] / many[0]:.2f}x  accuracy {100 * (many[2] - one[2]):+.2f} points"
    )


if __name__ == "__main__":
    main()
