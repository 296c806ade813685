"""Self-describing checkpoints: ``model.safetensors`` + ``manifest.json``, no pickle.

The manifest names everything needed to rebuild the model (backbone, head sizes, tasks and
classes, preprocessing) so loading needs nothing but the run folder, and never downloads.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from headstart.backbones import Preprocessing, create_backbone
from headstart.errors import CheckpointError, HeadstartError
from headstart.manifest import validate_manifest
from headstart.model import Classifier
from headstart.training.files import sha256_file, write_atomic, write_file_atomic

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
FORMAT = "headstart-checkpoint/1"


def library_versions() -> dict[str, str]:
    """Versions of the libraries a checkpoint was made with."""
    import safetensors
    import timm
    import torchvision

    from headstart import __version__

    return {
        "headstart": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "safetensors": safetensors.__version__,
    }


def save_checkpoint(run_dir: Path, model: Classifier, manifest: dict[str, Any]) -> None:
    """Write weights then manifest (the manifest's presence marks a complete checkpoint);
    the manifest records the weights file's SHA-256, which loading checks."""
    from safetensors.torch import save_model

    need = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    write_file_atomic(run_dir / WEIGHTS, lambda tmp: save_model(model, str(tmp)), need)
    manifest = {
        "format": FORMAT,
        **manifest,
        "weights_sha256": sha256_file(run_dir / WEIGHTS),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": library_versions(),
    }
    write_atomic(run_dir / MANIFEST, json.dumps(manifest, indent=2).encode())


@dataclass
class LoadedRun:
    """A model rebuilt from a run folder, in eval mode, with its manifest."""

    run_dir: Path
    model: Classifier
    manifest: dict[str, Any]

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing the model was trained with."""
        return Preprocessing.from_dict(self.manifest["preprocessing"])

    @property
    def augment(self) -> str:
        """The augmentation preset the model was trained with (its TTA symmetry group)."""
        return self.manifest.get("augment", "photo")

    @property
    def tasks(self) -> dict[str, list[str]]:
        """Class names per task."""
        return self.manifest["tasks"]

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Store ``manifest`` as the run's ``manifest.json`` (atomically) and bring this run up
        to date with it, its temperature included: one load serves evaluate's every step."""
        write_atomic(self.run_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
        self.manifest = manifest
        self.model.temperature = temperatures(manifest)


def read_json(path: Path) -> dict[str, Any]:
    """A run file's JSON object; CheckpointError naming the file when it is not one."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"CheckpointError: {path} cannot be read as JSON ({e}). Restore it from a backup "
            "or train again."
        ) from None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"CheckpointError: {path} holds a JSON {type(value).__name__}, not an object. "
            "Restore it from a backup or train again."
        )
    return value


def read_manifest(run_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``manifest.json``; CheckpointError says what is missing and the fix."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(
            f"CheckpointError: run folder {run_dir} does not exist. Pass the --out folder of a "
            "finished `headstart train` run (it holds manifest.json and model.safetensors)."
        )
    path = run_dir / MANIFEST
    if not path.is_file():
        raise CheckpointError(
            f"CheckpointError: {run_dir} has no {MANIFEST}, so it is not a finished headstart "
            "run (training may have been interrupted). Train again or pass another run folder."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"CheckpointError: {path} is corrupt (not valid JSON: {e}). Restore it from a "
            "backup or train again."
        ) from None
    return validate_manifest(manifest, path)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild the trained model from a run folder (no pickle, no network). The weights must
    match the manifest's SHA-256 and be finite."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    weights = run_dir / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(
            f"CheckpointError: {weights} is missing. The run did not finish saving; train again."
        )
    expected = manifest.get("weights_sha256")
    if expected is not None and sha256_file(weights) != expected:
        raise CheckpointError(
            f"CheckpointError: {weights} is not the file this run saved (its SHA-256 differs "
            f"from manifest.json's {expected[:12]}...): it was changed, damaged or replaced. "
            "Restore the run folder from a backup or train again."
        )
    try:
        backbone = create_backbone(manifest["backbone"], "none")
        model = Classifier(
            backbone.module,
            int(manifest["num_features"]),
            {t: len(c) for t, c in manifest["tasks"].items()},
            float(manifest.get("dropout", 0.0)),
            manifest.get("family", backbone.spec.family),
            manifest.get("layers", "last"),
        )
        load_model(model, str(weights), strict=True, device=str(device))
    except HeadstartError:
        raise
    except (SafetensorError, RuntimeError, OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"CheckpointError: could not load {weights} ({type(e).__name__}: {str(e)[:300]}). "
            "The file is corrupt or does not match manifest.json; train again or restore the "
            "run folder from a backup."
        ) from None
    check_finite(model, weights)
    model.temperature = temperatures(manifest)
    model.eval()
    return LoadedRun(run_dir, model, manifest)


def as_loaded(run: str | Path | LoadedRun) -> LoadedRun:
    """``run`` itself when it is loaded already, else :func:`load_run` of its folder."""
    return run if isinstance(run, LoadedRun) else load_run(run)


def temperatures(manifest: dict[str, Any]) -> dict[str, float]:
    """The manifest's temperature per task (``evaluate --calibrate``); none: empty."""
    return {t: float(v) for t, v in (manifest.get("temperature") or {}).items()}


def check_finite(model: torch.nn.Module, origin: Path) -> None:
    """CheckpointError naming the first parameter or buffer holding NaN or infinity: such a
    model answers NaN for every image, which must never pass for a prediction."""
    for name, t in model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(
                f"CheckpointError: {origin}: tensor {name!r} holds {bad} NaN or infinite "
                "value(s), so every prediction would be NaN. The training diverged or the file "
                "was damaged; train again (a lower --lr helps a diverging run)."
            )
