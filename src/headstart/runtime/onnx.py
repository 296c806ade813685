"""ONNX Runtime as an engine, without torch: loads an ``.onnx`` export, checks its headstart
metadata like a manifest and its outputs for NaN, and runs preprocessed float32 batches."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from headstart.errors import CheckpointError, ExportError
from headstart.manifest import validate_manifest

INPUT = "images"  # the exported graph's input name


class Engine(Protocol):
    """Batch in, logits per task out."""

    meta: dict[str, Any]
    name: str

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task for a preprocessed float32 (N, 3, H, W) batch."""
        ...


class OnnxEngine:
    """An exported ONNX file in ONNX Runtime (CPU)."""

    name = "onnxruntime"

    def __init__(self, path: str | Path) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:
            raise ExportError(
                f"ExportError: {path} cannot be loaded by ONNX Runtime ({e}). Export it again "
                "with `headstart export RUN`."
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        if "headstart" not in props:
            raise ExportError(
                f"ExportError: {path} has no headstart metadata (preprocessing, tasks, classes); "
                "only files written by `headstart export` can be served or verified."
            )
        self.meta = export_meta(props["headstart"], self.path)
        check_finite_outputs(self, self.path)

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task."""
        out = self.session.run(self.meta["outputs"], {INPUT: batch})
        return dict(zip(self.meta["outputs"], out))


def export_meta(text: str, path: Path) -> dict[str, Any]:
    """An export's metadata JSON, checked like a manifest (tasks, preprocessing) plus its
    ``outputs`` and ``model_id``; an ExportError names the bad field."""

    try:
        meta = json.loads(text)
        shared = ("format", "backbone", "tasks", "preprocessing", "thresholds")  # as a manifest
        validate_manifest({"num_features": 1, **{k: meta.get(k) for k in shared}}, path)
    except (json.JSONDecodeError, CheckpointError) as e:
        why = str(e).removeprefix("CheckpointError: ")
        raise ExportError(
            f"ExportError: {path}: the headstart metadata is unusable ({why[:300]}). Export "
            "the run again with `headstart export RUN`."
        ) from None
    outputs, model_id = meta.get("outputs"), meta.get("model_id")
    if outputs != list(meta["tasks"]) or not isinstance(model_id, str):
        raise ExportError(
            f"ExportError: {path}: the metadata's 'outputs' ({outputs!r}) must list its tasks "
            f"({list(meta['tasks'])}) and 'model_id' must be a string. Export the run again."
        )
    return meta


def check_finite_outputs(engine: Engine, origin: Path) -> None:
    """Run one grey image through ``engine``; ExportError if any logit is NaN or infinite
    (weights holding NaN answer NaN for every image, which must never be served)."""
    size = engine.meta["preprocessing"]["input_size"]
    out = engine.logits(np.zeros((1, 3, size, size), dtype=np.float32))
    bad = [task for task, v in out.items() if not np.isfinite(v).all()]
    if bad:
        raise ExportError(
            f"ExportError: {origin} answers NaN or infinity for task(s) {', '.join(bad)} on a "
            "plain grey image: its weights are not finite. Train again (a diverging run needs "
            "a lower --lr) and export the new run."
        )
