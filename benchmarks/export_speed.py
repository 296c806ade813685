"""Export speed: ONNX Runtime against PyTorch eager on the CPU, same model, same batches.

Both engines get the same preprocessed batches of the run's validation images; rounds
alternate between them so drift on a shared machine hits both. Prints images/second of each
and the ratio, and the max logit difference.

    .venv/bin/python benchmarks/export_speed.py [RUN_DIR] [--rounds 3] [--batch 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from headstart.data import eval_transform
from headstart.evaluation.evaluate import eval_samples, image_reader
from headstart.export import export_run, load_engine
from headstart.export.runtime import TorchEngine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default="runs/demo")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    onnx_path = Path(args.run) / "model.onnx"
    if not onnx_path.is_file():
        export_run(args.run, progress=False)
    torch_engine, onnx_engine = TorchEngine(args.run), load_engine(onnx_path)
    prep = torch_engine.run.preprocessing
    samples = eval_samples(torch_engine.run, None)[0]
    read, transform = image_reader(prep), eval_transform(prep)
    images = np.stack([transform(read(s.path)).numpy() for s in samples]).astype(np.float32)
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
    seconds = {"pytorch": 0.0, "onnxruntime": 0.0}
    diff = 0.0
    for engine in (torch_engine, onnx_engine):  # warm-up
        engine.logits(batches[0])
    for _ in range(args.rounds):
        for engine in (torch_engine, onnx_engine):
            t0 = time.perf_counter()
            outs = [engine.logits(b) for b in batches]
            seconds[engine.name] += time.perf_counter() - t0
            if engine is onnx_engine:
                ref = [torch_engine.logits(b) for b in batches[:1]]
                task = engine.meta["outputs"][0]
                diff = max(diff, float(np.abs(ref[0][task] - outs[0][task]).max()))
    n = len(images) * args.rounds
    rate = {k: n / v for k, v in seconds.items()}
    print(f"{args.run}: {len(images)} images x {args.rounds} rounds, batch {args.batch}, CPU")
    for name, r in rate.items():
        print(f"  {name:12s} {r:7.1f} images/s  ({1000 / r:.1f} ms/image)")
    print(f"  onnxruntime / pytorch: {rate['onnxruntime'] / rate['pytorch']:.2f}x; "
          f"max |logit diff| {diff:.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
