"""``--precision``: the rule ``auto`` follows, the refusals, and a bf16 run end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from headstart.cache.features import FeatureSource
from headstart.cli.main import main
from headstart.errors import ConfigError
from headstart.training import precision as prec
from headstart.training.precision import Precision, resolve_precision
from tests.unit.conftest import FAST, served_val_loss, train_cli

CPU = torch.device("cpu")
needs_bf16 = pytest.mark.skipif(not prec.cpu_has_bf16(), reason="no native bf16 on this CPU")


def test_auto_is_bf16_only_on_cpus_with_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", CPU).name == "bf16"
    monkeypatch.setattr(prec, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", CPU).name == "fp32"
    with pytest.raises(ConfigError, match="no native bfloat16"):
        resolve_precision("bf16", CPU)  # it would be slower than fp32 there
    with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
        resolve_precision("fp16", CPU)
    with pytest.raises(ConfigError, match="expected one of auto, fp32, bf16, fp16"):
        resolve_precision("int8", CPU)
    fp32 = resolve_precision("fp32", CPU)
    assert not fp32.mixed and not fp32.scaled and not fp32.scaler().is_enabled()


@needs_bf16
def test_bf16_autocast_runs_convolutions_in_bfloat16() -> None:
    conv = torch.nn.Conv2d(3, 4, 3)
    with resolve_precision("bf16", CPU).autocast():
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.bfloat16
    with resolve_precision("fp32", CPU).autocast():
        assert conv(torch.randn(1, 3, 8, 8)).dtype == torch.float32


def test_features_of_another_precision_are_cached_apart() -> None:
    fp32 = FeatureSource("b", "w", {"size": 224}, "pooled")
    assert fp32.key("clean") == FeatureSource("b", "w", {"size": 224}, "pooled", "fp32").key(
        "clean"
    )  # the key fp32 features always had
    assert fp32.key("clean") != FeatureSource("b", "w", {"size": 224}, "pooled", "bf16").key(
        "clean"
    )


def test_fp16_on_a_cpu_is_refused_before_any_work(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--precision", "fp16",
            "--out", str(tmp_path / "r")]  # fmt: skip
    assert main(argv) == 2
    assert "fp16 needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@needs_bf16
def test_a_bf16_fine_tune_trains_and_records_its_precision(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--strategy",
            "finetune", "--epochs", "2", "--precision", "bf16"]  # fmt: skip
    printed, manifest = train_cli(argv, tmp_path / "bf16", capsys)
    assert "precision bf16" in printed and manifest["precision"] == "bf16"
    assert manifest["metrics"]["val_acc"] > 0.5  # two colour classes: it learns in bf16
    weights = (tmp_path / "bf16" / "model.safetensors").read_bytes()
    assert len(weights) > 0
    evaluated = main(["--no-progress", "evaluate", str(tmp_path / "bf16"), "--no-analysis"])
    assert evaluated == 0 and "accuracy" in capsys.readouterr().out


@needs_bf16
def test_auto_keeps_the_multi_layer_probe_in_fp32(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--layers", "all"]
    _, auto = train_cli(argv, tmp_path / "auto", capsys)
    assert auto["precision"] == "fp32"  # bf16 cost it 2.7 points on elpv
    _, asked = train_cli([*argv, "--precision", "bf16"], tmp_path / "bf16", capsys)
    assert asked["precision"] == "bf16"  # an explicit choice is kept


@needs_bf16
@pytest.mark.parametrize("strategy", ["finetune", "probe"])
def test_a_bf16_run_reports_the_scores_of_the_fp32_model_it_serves(
    strategy: str, trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--strategy",
            strategy, "--epochs", "2", "--precision", "bf16"]  # fmt: skip
    _, manifest = train_cli(argv, tmp_path / "bf16", capsys)
    served = served_val_loss(tmp_path / "bf16")
    assert manifest["metrics"]["val_loss"] == pytest.approx(served, rel=1e-5, abs=1e-6)


def test_depthwise_convolutions_take_their_backward_in_float32_only_while_training() -> None:
    """On a CPU in bf16 the forward pass is autocast's, bit for bit; the gradients are the
    float32 gradients at the same inputs and weights; outside the block nothing is left."""
    import copy

    import timm

    from headstart.training.depthwise import float32_backward, is_depthwise

    model = timm.create_model("test_efficientnet", num_classes=2)
    convs = [m for m in model.modules() if is_depthwise(m)]
    assert convs  # EfficientNet's depthwise convolutions are found
    conv = convs[0]
    x = torch.randn(2, conv.in_channels, 12, 12, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(2, conv.out_channels, *conv(x.float()).shape[2:])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = conv(x)
    with float32_backward(model) as n, torch.autocast("cpu", dtype=torch.bfloat16):
        assert n == len(convs)
        out = conv(x)
    assert torch.equal(out, plain)
    with float32_backward(model):
        twin = copy.deepcopy(conv)  # a copy made meanwhile computes with its own weights
        torch.nn.init.zeros_(twin.weight)
        assert not twin(x.detach().float()).any()
    out.backward(g.to(out.dtype))
    xf = x.detach().float().requires_grad_()
    wf = conv.weight.detach().clone().requires_grad_()
    ref = torch.nn.functional.conv2d(xf, wf, None, conv.stride, conv.padding, conv.dilation,
                                     conv.groups)  # fmt: skip
    ref.backward(g.to(out.dtype).float())
    torch.testing.assert_close(conv.weight.grad, wf.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, xf.grad.to(torch.bfloat16))
    assert x.grad.dtype == torch.bfloat16 and conv.weight.grad.dtype == torch.float32
    assert all("forward" not in c.__dict__ for c in convs)  # restored


def test_the_float32_backward_is_used_where_this_cpu_measures_bf16_slower(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Measured once per machine, kept in the cache folder and read back (every run and
    every resumed run on a machine takes the same path); only on a CPU in bf16."""
    import contextlib

    from headstart.training import depthwise

    monkeypatch.setenv("HEADSTART_CACHE", str(tmp_path))
    timed: list[torch.dtype] = []
    times = {torch.bfloat16: 40.0, torch.float32: 10.0}
    monkeypatch.setattr(depthwise, "_backward_ms", lambda d: timed.append(d) or times[d])
    depthwise.bf16_backward_is_slow.cache_clear()
    assert depthwise.bf16_backward_is_slow() and len(timed) == 2
    depthwise.bf16_backward_is_slow.cache_clear()  # a new process: read back, not re-timed
    assert depthwise.bf16_backward_is_slow() and len(timed) == 2
    (saved,) = (tmp_path / "machine").iterdir()
    assert json.loads(saved.read_text())["bf16_ms"] == 40.0
    saved.unlink()
    times[torch.bfloat16] = 12.0  # within SLOWER of fp32's: bf16 as it is
    depthwise.bf16_backward_is_slow.cache_clear()
    assert not depthwise.bf16_backward_is_slow()
    depthwise.bf16_backward_is_slow.cache_clear()
    model = torch.nn.Conv2d(4, 4, 3, groups=4)
    for slow in (True, False):
        monkeypatch.setattr(prec, "bf16_backward_is_slow", lambda s=slow: s)
        used = Precision("bf16", "cpu").training(model)
        assert isinstance(used, contextlib.nullcontext) is not slow
    for other in (Precision("fp32", "cpu"), Precision("bf16", "cuda")):
        assert isinstance(other.training(model), contextlib.nullcontext)


def test_fp32_on_a_gpu_is_float32_exactly_and_leaves_the_callers_settings() -> None:
    """cuDNN convolutions default to TF32; fp32 passes (validation, evaluate, predict on a
    run folder) turn it off so a GPU scores the model as the CPU serves it."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        with Precision("fp32", "cuda").autocast():
            assert not cudnn.allow_tf32 and not matmul.allow_tf32
        assert cudnn.allow_tf32 and matmul.allow_tf32
        with Precision("fp32", "cpu").autocast():
            assert cudnn.allow_tf32  # nothing to change on a CPU
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before
