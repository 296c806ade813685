"""Export speed: PyTorch eager, the float32 ONNX export and its static int8 quantization
(and the dynamic one) in ONNX Runtime on the CPU: same model, same batches; then files to
labels end to end through the one predictor, over PyTorch and over the torch-free runtime.

Every engine gets the same preprocessed batches of the run's validation images; rounds
alternate between them so drift on a shared machine hits all alike, and each engine's best
round is its figure (a stall in one round does not carry it). Prints images/second
and accuracy of each, the max logit difference of the float32 export, and the ratios. The
models are exported afresh into a temporary folder, as `headstart export --quantize` writes
them, and the int8 ones kept even when slower (to measure them).

    .venv/bin/python benchmarks/export_speed.py [RUN_DIR] [--rounds 3] [--batch 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from headstart import tune_allocator
from headstart.data import eval_transform
from headstart.evaluation.evaluate import cached_reader
from headstart.evaluation.sources import eval_samples
from headstart.export import calibration_batches, export_run, load_engine
from headstart.export.runtime import TorchEngine
from headstart.export.write import quantize_onnx
from headstart.recommend.evidence import first_task_labels
from headstart.runtime.predictor import Predictor


def accuracy(engine, batches: list[np.ndarray], labels: np.ndarray) -> float:
    """Top-1 accuracy of the first task over the labelled images."""
    task = engine.meta["outputs"][0]
    pred = np.concatenate([engine.logits(b)[task].argmax(1) for b in batches])
    known = labels >= 0
    return float((pred[known] == labels[known]).mean())


def main() -> None:
    """Time every engine in alternating rounds; print rates, accuracies and ratios."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", nargs="?", default="runs/demo")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    # as the command line does; without it PyTorch ran up to 3x slower after ONNX Runtime had
    # run in the same process (each batch's activations mapped afresh). HEADSTART_MALLOC=system
    # measures the untuned allocator.
    print(f"allocator tuned: {tune_allocator()}")
    tmp = Path(tempfile.mkdtemp(prefix="export-speed-"))
    onnx_path = tmp / "model.onnx"  # exported now: a run's older model.onnx may predate fixes
    export_run(args.run, out=onnx_path, progress=False)
    torch_engine = TorchEngine(args.run)
    calibration = calibration_batches(torch_engine.run)
    static = quantize_onnx(onnx_path, tmp / "static.onnx", "static", calibration)
    dynamic = quantize_onnx(onnx_path, tmp / "dynamic.onnx", "dynamic")
    engines = {
        "pytorch": torch_engine,
        "onnx fp32": load_engine(onnx_path),
        "onnx int8 static": load_engine(static),
        "onnx int8 dynamic": load_engine(dynamic),
    }
    prep = torch_engine.run.preprocessing
    samples = eval_samples(torch_engine.run, None)[0]
    read, transform = cached_reader(prep), eval_transform(prep)
    images = np.stack([transform(read(s.path)).numpy() for s in samples]).astype(np.float32)
    labels = first_task_labels([s.target for s in samples])  # a labels CSV: {task: class}
    batches = [images[i : i + args.batch] for i in range(0, len(images), args.batch)]
    seconds = dict.fromkeys(engines, float("inf"))  # each engine's best round
    for engine in engines.values():  # warm-up
        engine.logits(batches[0])
    for _ in range(args.rounds):
        for name, engine in engines.items():
            t0 = time.perf_counter()
            for b in batches:
                engine.logits(b)
            seconds[name] = min(seconds[name], time.perf_counter() - t0)
    task = torch_engine.meta["outputs"][0]
    diff = max(
        float(np.abs(torch_engine.logits(b)[task] - engines["onnx fp32"].logits(b)[task]).max())
        for b in batches[:2]
    )
    rate = {k: len(images) / v for k, v in seconds.items()}
    acc = {k: accuracy(e, batches, labels) for k, e in engines.items()}
    print(f"{args.run}: {len(images)} images x {args.rounds} rounds, batch {args.batch}, CPU")
    for name, r in rate.items():
        size = (
            ""
            if name == "pytorch"
            else f"  {Path(engines[name].path).stat().st_size / 1e6:5.1f} MB"
        )  # type: ignore[attr-defined]
        print(f"  {name:18s} {r:7.1f} images/s  ({1000 / r:6.1f} ms/image)  accuracy "
              f"{acc[name]:.2%}{size}")  # fmt: skip
    print(f"  max |logit diff| pytorch vs onnx fp32: {diff:.1e}")
    paths = [s.path for s in samples]
    predictors = {"pytorch": Predictor(torch_engine), "onnx fp32": Predictor(engines["onnx fp32"])}
    end_to_end = dict.fromkeys(predictors, float("inf"))
    for _ in range(args.rounds):  # decode + NumPy preprocessing + engine + top-k, alternating
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            predictor.predict_paths(paths, top_k=1, batch_size=args.batch)
            end_to_end[name] = min(end_to_end[name], time.perf_counter() - t0)
    e2e = {k: len(paths) / v for k, v in end_to_end.items()}
    print("  files -> top-1 (decode, NumPy preprocessing, engine; headstart.runtime.Predictor):")
    for name, r in e2e.items():
        note = "  (the torch-free runtime)" if name == "onnx fp32" else ""
        print(f"  {name:18s} {r:7.1f} images/s  ({1000 / r:6.1f} ms/image){note}")
    print(
        f"ratios: ort/torch {rate['onnx fp32'] / rate['pytorch']:.2f}x  "
        f"torch-free/torch files {e2e['onnx fp32'] / e2e['pytorch']:.2f}x  "
        f"int8 static/fp32 {rate['onnx int8 static'] / rate['onnx fp32']:.2f}x "
        f"(accuracy {100 * (acc['onnx int8 static'] - acc['onnx fp32']):+.2f} points)  "
        f"int8 dynamic/fp32 {rate['onnx int8 dynamic'] / rate['onnx fp32']:.2f}x "
        f"(accuracy {100 * (acc['onnx int8 dynamic'] - acc['onnx fp32']):+.2f} points)"
    )


if __name__ == "__main__":
    main()
