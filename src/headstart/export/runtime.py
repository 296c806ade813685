"""Engines: one interface over a run folder (PyTorch), an ONNX file (ONNX Runtime) and a
torch.export program, so verification, serving and benchmarks treat them alike.

Every engine takes a float32 NCHW batch, already preprocessed as its ``meta`` describes, and
returns logits per task as numpy arrays.

No engine loads a file that can run code: ``.pt2`` archives are never read back
(``torch.export.load`` falls back to unpickling arbitrary objects), so a torch.export
program is verified from memory as it is written, and served files are ONNX or run folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from headstart.export.graph import Exportable, export_metadata
from headstart.training import LoadedRun

SIDECAR = ".json"  # model.onnx -> model.onnx.json


class TorchEngine:
    """A run folder's model in PyTorch eager mode, on ``device`` (CPU by default), in float32
    (the precision runs are validated and served in), its BatchNorm folded into the
    convolutions (``training.fold``) unless ``fold`` is False: the exporter writes and
    verifies against the model itself."""

    name = "pytorch"

    def __init__(
        self, run: str | Path | LoadedRun, device: str = "cpu", *, fold: bool = True
    ) -> None:
        from headstart.training.checkpoint import as_loaded
        from headstart.training.device import resolve_device, to_device
        from headstart.training.fold import fold_batchnorm
        from headstart.training.precision import serving

        self.run = as_loaded(run)
        self.device = resolve_device(device)
        self.precision = serving(self.device)  # float32 exactly, on a GPU too
        self.module = to_device(Exportable(self.run.model), self.device).eval()
        if fold:  # its own copy of the model, which only ever predicts
            fold_batchnorm(self.module)
        self.meta = export_metadata(self.run)

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task."""
        from headstart.training.device import images_to

        x = images_to(torch.from_numpy(batch), self.device)
        with self.precision.autocast():
            out = self.module(x)
        return {task: o.float().cpu().numpy() for task, o in zip(self.meta["outputs"], out)}


class ProgramEngine:
    """A torch.export program in memory (the one being written to ``.pt2``)."""

    name = "torch.export"

    def __init__(self, program: torch.export.ExportedProgram, meta: dict[str, Any]) -> None:
        self.module = program.module()
        self.meta = meta

    @torch.inference_mode()
    def logits(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Logits per task."""
        out = self.module(torch.from_numpy(batch))
        return {task: o.float().numpy() for task, o in zip(self.meta["outputs"], out)}
