"""What an export holds: the model as a plain graph (images in, one logits tensor per task
out) and the metadata that makes it self-describing (preprocessing, tasks, classes)."""

from __future__ import annotations

import copy
import hashlib
from typing import Any

import torch
from torch import nn

from headstart.model import Classifier, head_key
from headstart.runtime.onnx import INPUT
from headstart.runtime.preprocess import views_for
from headstart.training import LoadedRun

METADATA_FORMAT = "headstart-export/1"


class Exportable(nn.Module):
    """The classifier with its heads in a list: returns a tuple of logits, one per task, in
    ``tasks`` order. (Head names such as ``class`` are Python keywords, which TorchScript and
    torch.export code generation cannot take as attribute names; the weights are the same.)"""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.taps = model.taps if model.layers == "all" else None
        self.heads = nn.ModuleList([model.heads[head_key(t)] for t in model.tasks])
        self.scale = [1.0 / model.temperature.get(t, 1.0) for t in model.tasks]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits per task, each (N, num_classes)."""
        features = self.backbone(images) if self.taps is None else self.taps(images)
        return tuple(
            head(features) if s == 1.0 else head(features) * s
            for head, s in zip(self.heads, self.scale)
        )


class PaddedConv2d(nn.Conv2d):
    """A convolution after a constant zero padding (``pads``: left, right, top, bottom)."""

    pads: tuple[int, int, int, int]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pad, then convolve (the convolution's own padding is 0)."""
        return super().forward(nn.functional.pad(x, self.pads))


def static_padding(module: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``module`` whose TF "same" convolutions (timm's ``Conv2dSame``, which
    computes its padding from each input's size) pad by constants worked out for
    ``example``'s size: the graph loses its shape arithmetic, and ONNX Runtime can fuse
    each pad into its convolution (an int8 graph otherwise pays layout changes around every
    ``Pad``). The same numbers at that size; ``module`` itself is untouched (and returned
    as it is when it has no such convolution)."""
    from timm.layers import Conv2dSame
    from timm.layers.padding import get_same_padding

    same = [name for name, m in module.named_modules() if type(m) is Conv2dSame]
    if not same:
        return module
    module = copy.deepcopy(module)
    sizes: dict[str, tuple[int, ...]] = {}

    def record(name: str) -> Any:
        def hook(m: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            sizes[name] = tuple(args[0].shape[-2:])

        return hook

    hooks = [module.get_submodule(n).register_forward_pre_hook(record(n)) for n in same]
    with torch.no_grad():
        module(example)
    for hook in hooks:
        hook.remove()
    for name in same:  # in place: a multi-layer probe's taps hold these very modules
        conv = module.get_submodule(name)
        ph, pw = map(get_same_padding, sizes[name], conv.kernel_size, conv.stride, conv.dilation)
        conv.__class__ = PaddedConv2d
        conv.pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    return module


def model_id(run: LoadedRun) -> str:
    """``RUNNAME-<first 12 hex of the weights file's SHA-256>``: names exactly these weights
    (the manifest's digest, which loading checked; older runs' files are hashed here)."""
    digest = (
        run.manifest.get("weights_sha256")
        or hashlib.sha256((run.run_dir / "model.safetensors").read_bytes()).hexdigest()
    )
    return f"{run.run_dir.resolve().name}-{digest[:12]}"


def export_metadata(run: LoadedRun) -> dict[str, Any]:
    """Everything a consumer needs to feed the exported model and read its outputs."""
    prep = run.preprocessing
    level = prep.white_level
    deep = "" if level is None else f"; grey deeper than 8 bits read with {level} as white"
    return {
        "format": METADATA_FORMAT,
        "model_id": model_id(run),
        "backbone": run.manifest["backbone"],
        "strategy": run.manifest.get("strategy", {}).get("name"),
        "input": {
            "name": INPUT,
            "layout": "NCHW",
            "dtype": "float32",
            "shape": ["batch", 3, prep.input_size, prep.input_size],
        },
        "preprocessing": {
            **prep.to_dict(),
            "crop": {"mode": "center", "size": prep.input_size},
            "steps": [
                f"convert to RGB (EXIF orientation applied{deep})",
                f"resize the shorter side to {prep.resize_size} ({prep.interpolation})",
                f"centre-crop {prep.input_size}x{prep.input_size}",
                "scale to [0, 1]",
                f"normalise with mean {list(prep.mean)} and std {list(prep.std)}",
            ],
        },
        "tasks": {task: list(classes) for task, classes in run.tasks.items()},
        # two-class tasks decide their second class at this probability (evaluate --thresholds)
        "thresholds": dict(run.manifest.get("thresholds") or {}),
        "tta": views_for(run.augment),  # the test-time views that suit its training
        "outputs": list(run.tasks),  # one logits output per task, in this order
    }
