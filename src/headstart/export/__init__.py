"""``headstart export``: ONNX or torch.export files that carry their preprocessing and prove
they match PyTorch before they are handed over."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from headstart.data import MISSING, Sample
from headstart.errors import ConfigError, ExportError
from headstart.export.graph import Exportable, export_metadata
from headstart.export.runtime import ProgramEngine, TorchEngine
from headstart.export.verify import TOLERANCE, Verification, verify
from headstart.export.write import quantize_onnx, write_onnx, write_program, write_sidecar
from headstart.runtime.engines import load_engine
from headstart.runtime.onnx import Engine, OnnxEngine
from headstart.training.checkpoint import LoadedRun

FORMATS = {"onnx": ".onnx", "torch-export": ".pt2"}


@dataclass
class ExportResult:
    """One written, verified file."""

    path: Path
    sidecar: Path
    verification: Verification

    @property
    def megabytes(self) -> float:
        """File size in MB."""
        return self.path.stat().st_size / 1e6


def verification_samples(run_dir: Path, images: list[str] | None) -> list[Sample]:
    """The run's validation images (labelled), or the given files and folders (unlabelled)."""
    from headstart.evaluation.sources import eval_samples
    from headstart.runtime.predictions import expand_inputs
    from headstart.training import load_run

    if images:
        return [Sample(p, MISSING) for p in expand_inputs(images)]
    try:
        return eval_samples(load_run(run_dir), None)[0]
    except FileNotFoundError:
        raise ConfigError(
            f"ConfigError: {run_dir} has no split.json to take validation images from; pass "
            "--images DIR_OR_FILES to verify the export on."
        ) from None


def _write_verified(
    reference: Engine, tmp: Path, final: Path, samples: list[Sample], tolerance: float | None,
    progress: bool, program: ProgramEngine | None = None,
) -> ExportResult:  # fmt: skip
    """Verify ``tmp`` (or, for a ``.pt2``, the ``program`` written there) against the
    reference; on success move it to ``final`` (an older export there is replaced only by
    one that passed), else delete it and raise."""
    try:
        engine = program or OnnxEngine(tmp)
        v = verify(reference, engine, samples, tolerance=tolerance, progress=progress)
    except Exception:
        tmp.unlink(missing_ok=True)
        raise
    if not v.passed:
        tmp.unlink(missing_ok=True)
        raise ExportError(
            "ExportError: the exported model does not match PyTorch, so it was not written.\n"
            + "\n".join(v.lines())
            + "\nTry another --opset or --format, and report the numbers above."
        )
    os.replace(tmp, final)
    sidecar = write_sidecar(final, {**engine.meta, "verification": v.to_dict()})
    return ExportResult(final, sidecar, v)


def export_run(
    run_dir: str | Path,
    fmt: str = "onnx",
    *,
    opset: int = 17,
    quantize: str | None = None,
    out: str | Path | None = None,
    images: list[str] | None = None,
    progress: bool = True,
) -> list[ExportResult]:
    """Export a run and verify it (and its int8 quantization, when asked) on real images."""
    if fmt not in FORMATS:
        raise ConfigError(f"ConfigError: --format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    if quantize not in (None, *QUANTIZE):
        raise ConfigError(
            f"ConfigError: --quantize {quantize!r}; choose one of {', '.join(QUANTIZE)}."
        )
    if quantize and fmt != "onnx":
        raise ConfigError(f"ConfigError: --quantize {quantize} needs --format onnx.")
    run_dir = Path(run_dir)
    reference = TorchEngine(run_dir, fold=False)  # the model itself is written
    samples = verification_samples(run_dir, images)
    final = Path(out) if out else run_dir / f"model{FORMATS[fmt]}"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.stem}.tmp{final.suffix}")
    meta = export_metadata(reference.run)
    program = None
    try:
        if fmt == "onnx":
            write_onnx(reference.module, tmp, meta, opset)
        else:
            program = ProgramEngine(write_program(reference.module, tmp, meta), meta)
    except ExportError:
        tmp.unlink(missing_ok=True)
        raise
    except Exception as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"ExportError: exporting {run_dir} to {fmt} failed: {e}") from None
    results = [_write_verified(reference, tmp, final, samples, TOLERANCE, progress, program)]
    if quantize:
        q_final = final.with_name(f"{final.stem}.int8{final.suffix}")
        q_tmp = q_final.with_name(f".{q_final.stem}.tmp{q_final.suffix}")
        batches = calibration_batches(reference.run) if quantize == "static" else None
        try:
            quantize_onnx(final, q_tmp, quantize, batches)
        except Exception as e:  # ONNX Runtime's quantizer on a graph it cannot take
            q_tmp.unlink(missing_ok=True)
            raise ExportError(
                f"ExportError: {quantize} int8 quantization of {final} failed in ONNX Runtime "
                f"({type(e).__name__}: {e}); {final} itself is written and verified. Serve it "
                "in float32" + (", or try --quantize dynamic." if quantize == "static" else ".")
            ) from None
        quantized = _write_verified(reference, q_tmp, q_final, samples, None, progress)
        speed = relative_speed(OnnxEngine(final), OnnxEngine(q_final), batches or [])
        quantized.verification.speedup = speed
        meta = OnnxEngine(q_final).meta
        write_sidecar(q_final, {**meta, "verification": quantized.verification.to_dict()})
        lost = accuracy_lost(quantized.verification)
        why = (
            f"ran at {speed:.2f}x the float32 ONNX model's speed on this machine"
            if speed <= 1.0
            else f"lost {100 * lost:.1f} points of accuracy (limit {100 * MAX_INT8_LOSS:.0f})"
            if lost > MAX_INT8_LOSS
            else None
        )
        if why:  # kept only when it pays, and costs no more than a point
            q_final.unlink(missing_ok=True)
            quantized.sidecar.unlink(missing_ok=True)
            raise ExportError(
                f"ExportError: the {quantize} int8 model {why}, so it was not kept ({final} "
                "was).\n" + "\n".join(quantized.verification.lines())
                + "\nServe the float32 model" + (", or try --quantize static."
                if quantize == "dynamic" else ".")
            )  # fmt: skip
        results.append(quantized)
    return results


QUANTIZE = ("static", "dynamic")
MAX_INT8_LOSS = 0.01  # accuracy an int8 model may lose against PyTorch and still be kept


def accuracy_lost(v: Verification) -> float:
    """The most accuracy any task lost against PyTorch on the labelled verification images;
    without labels, the share of images whose top-1 changed."""
    if v.accuracy:
        return max(torch_acc - exported for torch_acc, exported in v.accuracy.values())
    return max(1 - agree / max(v.images, 1) for agree in v.top1_agree.values())


CALIBRATION_IMAGES = 128


def calibration_batches(run: LoadedRun, batch: int = 32) -> list[np.ndarray]:
    """Up to ``CALIBRATION_IMAGES`` training images of the run (a seeded sample),
    preprocessed as the export expects, in batches: what static quantization calibrates
    its activation ranges on (never the validation images it is then verified on)."""
    from headstart.data import eval_transform
    from headstart.evaluation.evaluate import cached_reader
    from headstart.evaluation.sources import run_samples

    samples = run_samples(run, "train")
    if not samples:
        raise ConfigError(
            f"ConfigError: {run.run_dir} has no training images in split.json to calibrate "
            "static int8 on; use --quantize dynamic."
        )
    rng = np.random.default_rng(0)
    chosen = rng.permutation(len(samples))[:CALIBRATION_IMAGES]
    read, transform = cached_reader(run.preprocessing), eval_transform(run.preprocessing)
    images = np.stack([transform(read(samples[i].path)).numpy() for i in sorted(chosen)])
    return [images[i : i + batch].astype(np.float32) for i in range(0, len(images), batch)]


def relative_speed(base: Engine, other: Engine, batches: list[np.ndarray]) -> float:
    """How many times as fast ``other`` runs as ``base`` on ``batches`` (best of three
    alternating rounds, after a warm-up; one grey batch of 32 when none are given)."""
    if not batches:
        size = base.meta["preprocessing"]["input_size"]
        batches = [np.zeros((32, 3, size, size), dtype=np.float32)]
    best = {id(base): float("inf"), id(other): float("inf")}
    for engine in (base, other):
        engine.logits(batches[0])
    for _ in range(3):
        for engine in (base, other):
            start = time.perf_counter()
            for b in batches:
                engine.logits(b)
            best[id(engine)] = min(best[id(engine)], time.perf_counter() - start)
    return best[id(base)] / best[id(other)]


__all__ = [
    "FORMATS",
    "Engine",
    "ExportResult",
    "Exportable",
    "export_metadata",
    "export_run",
    "load_engine",
    "verify",
]
