"""Which engine a path asks for: a run folder (PyTorch, imported only then) or an ``.onnx``
export (ONNX Runtime, torch-free); ``.pt2`` archives are refused (loading one can run code)."""

from __future__ import annotations

from pathlib import Path

from headstart.errors import CheckpointError, ExportError
from headstart.runtime.onnx import Engine, OnnxEngine


def load_engine(path: str | Path, device: str = "cpu") -> Engine:
    """A run folder (run on ``device``) or an ``.onnx`` file as an engine (``.pt2`` is
    refused: loading one can run code)."""
    path = Path(path)
    if path.is_dir():  # the one engine that needs torch, imported only for it
        from headstart.export.runtime import TorchEngine

        return TorchEngine(path, device)
    if not path.is_file():
        raise CheckpointError(
            f"CheckpointError: {path} does not exist. Pass a run folder (the --out of "
            "`headstart train`) or a file written by `headstart export`."
        )
    if path.suffix == ".onnx":
        return OnnxEngine(path)
    if path.suffix == ".pt2":
        raise ExportError(
            f"ExportError: headstart does not load {path}: loading a torch.export archive can "
            "run code hidden in it (torch.export.load falls back to unpickling). Serve the run "
            "folder itself, or its ONNX export (`headstart export RUN`, then serve "
            "RUN/model.onnx)."
        )
    raise CheckpointError(f"CheckpointError: {path} is neither a run folder nor an .onnx export.")
