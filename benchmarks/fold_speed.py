"""BatchNorm folding: forward passes with each BatchNorm folded into its convolution
(``training.fold``) against the same network as it was, in one process, side by side.

(a) Forward images per second, eval mode, inference mode, batch 32 at the backbone's input
    size in channels_last, float32 (and bf16 where the CPU has it), for the offline
    EfficientNet-Lites and for torchvision CNNs with random weights (speed does not depend on
    the values): plain and folded timed in turn, round after round, best round of each; and
    the largest difference between their outputs, relative to the output's largest value.
(b) End to end: ``headstart train DATA`` (the probe) with an empty feature cache, with and
    without folding, in turn: the cold probe's wall time is mostly the frozen forward pass.

    .venv/bin/python benchmarks/fold_speed.py [--data ../shared/datasets/hymenoptera]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

import headstart.training.inputs as inputs
from headstart import tune_allocator
from headstart.backbones import create_backbone
from headstart.config import TrainConfig
from headstart.training import train
from headstart.training.device import to_device
from headstart.training.fold import fold_batchnorm
from headstart.training.precision import resolve_precision

DEFAULT_DATA = Path(__file__).parents[1] / "../shared/datasets/hymenoptera"
BACKBONES = {  # name -> weights
    "tf_efficientnet_lite0": "package",
    "tf_efficientnet_lite2": "package",
    "efficientnet_b0": "none",
    "mobilenet_v3_large": "none",
    "resnet18": "none",
}


def forward_speed(rounds: int, batch: int) -> None:
    """(a): images per second, plain and folded, per backbone and precision."""
    precisions = ["fp32"]
    with contextlib.suppress(Exception):
        resolve_precision("bf16", torch.device("cpu"))
        precisions.append("bf16")
    print(f"(a) forward images/s, batch {batch}, best of {rounds} rounds")
    print(f"{'backbone':<24}{'prec':<6}{'BN':>4}{'plain':>9}{'folded':>9}{'ratio':>7}{'diff':>10}")
    for name, weights in BACKBONES.items():
        b = create_backbone(name, weights)
        size = b.preprocessing.input_size
        plain = to_device(b.module, torch.device("cpu")).eval()
        folded = to_device(create_backbone(name, weights).module, torch.device("cpu")).eval()
        folded.load_state_dict(plain.state_dict())
        count = fold_batchnorm(folded).count
        x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
        for precision in precisions:
            autocast = resolve_precision(precision, torch.device("cpu")).autocast
            best = {"plain": float("inf"), "folded": float("inf")}
            with torch.inference_mode(), autocast():
                a, f = plain(x).float(), folded(x).float()  # also the warm-up
                diff = ((a - f).abs().max() / a.abs().max().clamp_min(1e-12)).item()
                for _ in range(rounds):
                    for label, net in (("plain", plain), ("folded", folded)):
                        start = time.perf_counter()
                        net(x)
                        best[label] = min(best[label], time.perf_counter() - start)
            p, q = batch / best["plain"], batch / best["folded"]
            print(
                f"{name:<24}{precision:<6}{count:>4}{p:>9.1f}{q:>9.1f}{q / p:>6.2f}x{diff:>10.1e}"
            )


@contextlib.contextmanager
def _no_folding(module: torch.nn.Module) -> Iterator[int]:
    yield 0


def cold_probe(data: Path, rounds: int) -> None:
    """(b): the probe with an empty cache, folded and not, in turn."""
    print(f"\n(b) headstart train {data.name} (probe), empty feature cache, {rounds} rounds")
    folding = inputs.folded_batchnorm
    times: dict[str, list[float]] = {"plain": [], "folded": []}
    accs: dict[str, float] = {}
    for r in range(rounds):
        for label in ("plain", "folded"):
            inputs.folded_batchnorm = folding if label == "folded" else _no_folding
            root = Path(tempfile.mkdtemp(prefix="fold-speed-"))
            cfg = TrainConfig().with_overrides(
                {
                    "data.root": str(data.resolve()),
                    "out": str(root / "run"),
                    "data.cache_dir": str(root / "cache"),
                }
            )
            start = time.perf_counter()
            result = train(cfg, echo=lambda s: None, progress=False)
            times[label].append(time.perf_counter() - start)
            accs[label] = result.fit.best.val_acc
            print(f"  round {r + 1} {label:<7}{times[label][-1]:7.1f} s  val_acc {accs[label]:.4f}")
    inputs.folded_batchnorm = folding
    p, f = min(times["plain"]), min(times["folded"])
    print(f"best: plain {p:.1f} s, folded {f:.1f} s: {p / f:.2f}x")


def main() -> None:
    """Run (a) and (b) and print their figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds of (a)")
    ap.add_argument("--probe-rounds", type=int, default=2, help="rounds of (b); 0 skips it")
    args = ap.parse_args()
    # as every command does; untuned, each batch's activations are mapped and zero-filled
    # afresh, which folding's fewer tensors spared and so inflated its gain (1.42-1.67x
    # against 1.17-1.32x tuned, measured). HEADSTART_MALLOC=system measures it untuned.
    print(f"allocator tuned: {tune_allocator()}")
    torch.manual_seed(0)
    forward_speed(args.rounds, 32)
    if args.probe_rounds:
        cold_probe(args.data, args.probe_rounds)


if __name__ == "__main__":
    main()
