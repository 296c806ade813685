"""``headstart export``: ONNX or torch.export files that carry their preprocessing and prove
they match PyTorch before they are handed over."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from headstart.data import MISSING, Sample
from headstart.errors import ConfigError, ExportError
from headstart.export.graph import Exportable, export_metadata
from headstart.export.runtime import Engine, OnnxEngine, ProgramEngine, TorchEngine, load_engine
from headstart.export.verify import TOLERANCE, Verification, verify
from headstart.export.write import quantize_onnx, write_onnx, write_program, write_sidecar

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
    from headstart.evaluation.evaluate import eval_samples
    from headstart.serve.predictor import expand_inputs
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
    if quantize not in (None, "dynamic"):
        raise ConfigError(f"ConfigError: --quantize {quantize!r}; the only mode is 'dynamic'.")
    if quantize and fmt != "onnx":
        raise ConfigError("ConfigError: --quantize dynamic needs --format onnx.")
    run_dir = Path(run_dir)
    reference = TorchEngine(run_dir)
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
        quantize_onnx(final, q_tmp)
        results.append(_write_verified(reference, q_tmp, q_final, samples, None, progress))
    return results


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
