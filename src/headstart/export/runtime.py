"""Engines: one interface over a run folder (PyTorch), an ONNX file (ONNX Runtime) and a
torch.export program, so verification, serving and benchmarks treat them alike.

Every engine takes a float32 NCHW batch, already preprocessed as its ``meta`` describes, and
returns logits per task as numpy arrays.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from headstart.errors import CheckpointError, ExportError
from headstart.export.graph import INPUT, Exportable, export_metadata

SIDECAR = ".json"  # model.onnx -> model.onnx.json


class Engine(Protocol):
    """Batch in, logits per task out."""

    meta: dict[str, Any]
    name: str

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task for a preprocessed float32 (N, 3, H, W) batch."""
        ...


class TorchEngine:
    """A run folder's model in PyTorch eager mode, on the CPU."""

    name = "pytorch"

    def __init__(self, run_dir: str | Path) -> None:
        from headstart.training import load_run

        self.run = load_run(run_dir)
        self.module = Exportable(self.run.model).eval()
        self.meta = export_metadata(self.run)

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task."""
        out = self.module(torch.from_numpy(batch))
        return {task: o.float().numpy() for task, o in zip(self.meta["outputs"], out)}


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
        self.meta = json.loads(props["headstart"])

    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task."""
        out = self.session.run(self.meta["outputs"], {INPUT: batch})
        return dict(zip(self.meta["outputs"], out))


class ProgramEngine:
    """A torch.export program (``.pt2``) in PyTorch."""

    name = "torch.export"

    def __init__(self, path: str | Path) -> None:
        extra = {"headstart.json": ""}
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as e:
            raise ExportError(
                f"ExportError: {path} cannot be loaded by torch.export.load ({e}). Export it "
                "again with `headstart export RUN --format torch-export`."
            ) from None
        self.module = program.module()
        self.meta = json.loads(extra["headstart.json"])

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task."""
        out = self.module(torch.from_numpy(batch))
        return {task: o.float().numpy() for task, o in zip(self.meta["outputs"], out)}


def load_engine(path: str | Path) -> Engine:
    """A run folder, an ``.onnx`` file or a ``.pt2`` file, as an engine."""
    path = Path(path)
    if path.is_dir():
        return TorchEngine(path)
    if not path.is_file():
        raise CheckpointError(
            f"CheckpointError: {path} does not exist. Pass a run folder (the --out of "
            "`headstart train`) or a file written by `headstart export`."
        )
    if path.suffix == ".onnx":
        return OnnxEngine(path)
    if path.suffix == ".pt2":
        return ProgramEngine(path)
    raise CheckpointError(
        f"CheckpointError: {path} is neither a run folder nor an .onnx or .pt2 export."
    )
