"""The CUDA paths, on a machine with a CUDA GPU (skipped elsewhere, so in CI): mixed precision
(bf16 autocast, fp16 with a GradScaler), scores served in float32 whatever the training
precision, predictions on the GPU equal to the CPU's, the CUDA random state kept by a
checkpoint, DistributedDataParallel and SyncBatchNorm over NCCL, and torchrun refusing more
processes than GPUs. `benchmarks/gpu_check.sh` runs these with the real backbone's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from headstart.cli.main import main
from headstart.training.precision import resolve_precision
from tests.unit.conftest import FAST, served_val_loss, train_cli

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
GPU = torch.device("cuda")
ROOT = Path(__file__).resolve().parents[2]


def test_auto_trains_in_bf16_where_the_gpu_has_it_else_fp16() -> None:
    picked = resolve_precision("auto", GPU)
    assert picked.name == ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
    fp16 = resolve_precision("fp16", GPU)
    assert fp16.scaled and fp16.scaler().is_enabled()  # float16 needs loss scaling
    assert not resolve_precision("bf16", GPU).scaler().is_enabled()
    conv = torch.nn.Conv2d(3, 4, 3).to(GPU)
    with fp16.autocast():
        assert conv(torch.randn(1, 3, 8, 8, device=GPU)).dtype == torch.float16


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_gpu_fine_tune_trains_in_its_precision_and_serves_float32(
    precision: str, trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / precision
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--strategy",
            "finetune", "--epochs", "3", "--device", "cuda", "--precision", precision]  # fmt: skip
    printed, manifest = train_cli(argv, out, capsys)
    assert "device cuda" in printed and manifest["precision"] == precision
    assert manifest["metrics"]["val_acc"] > 0.5  # two colour classes: it learns
    weights = load_file(str(out / "model.safetensors"))  # mixed precision: float32 weights
    assert {t.dtype for t in weights.values()} <= {torch.float32, torch.int64}
    # the best epoch was chosen on the float32 scores predict and serve give
    served = served_val_loss(out)
    assert manifest["metrics"]["val_loss"] == pytest.approx(served, rel=1e-4, abs=1e-5)


def test_stage_taps_build_over_a_backbone_already_on_the_gpu() -> None:
    from headstart.backbones import create_backbone
    from headstart.multilayer import StageTaps
    from tests.conftest import TINY

    bb = create_backbone(TINY, "none")
    expected = StageTaps(bb.module, bb.spec.family).dims
    assert StageTaps(bb.module.to(GPU), bb.spec.family).dims == expected  # recommend's order


@pytest.mark.parametrize("layers", ["last", "all"])
def test_a_probe_trains_on_the_gpu_and_scores_alike_there_and_on_the_cpu(
    layers: str, trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "probe"
    argv = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--device", "cuda",
            "--layers", layers]  # fmt: skip
    train_cli(argv, out, capsys)
    scores = {}
    # with the analysis: the probe's heads refitted on folds, on its cached features (a
    # multi-layer probe's standardised by the model's taps, which sit on the GPU)
    for device in ("cuda", "cpu"):
        assert main(["--no-progress", "evaluate", str(out), "--device", device]) == 0
        scores[device] = json.loads((out / "evaluation.json").read_text())
    capsys.readouterr()
    assert scores["cuda"]["accuracy"] == scores["cpu"]["accuracy"]
    assert scores["cuda"]["train_images"] == scores["cpu"]["train_images"] > 0


def test_a_run_killed_on_the_gpu_resumes_to_the_weights_of_one_never_stopped(
    tmp_path: Path,
) -> None:
    """The checkpoint keeps the CUDA random stream (the head's dropout draws on it): a
    gradual run with dropout, EMA and mixing, SIGKILLed after its first epoch and resumed,
    ends where the run never stopped ends (within the GPU kernels' run-to-run rounding)."""
    from tests.conftest import make_class_folders
    from tests.unit.test_resume import _start, _wait_for_epoch, _weights

    data = make_class_folders(tmp_path / "d", {"red": 60, "blue": 60})
    on_gpu = ("--device", "cuda", "--precision", "fp32")
    whole = _start(data, tmp_path / "whole", *on_gpu)
    assert whole.wait(300) == 0, whole.communicate()
    cut = _start(data, tmp_path / "cut", *on_gpu)
    _wait_for_epoch(tmp_path / "cut" / "resume" / "state.json", cut)
    cut.kill()
    cut.wait(30)
    assert not (tmp_path / "cut" / "manifest.json").exists(), "finished before the kill"
    assert main(["--no-progress", "train", "--resume", str(tmp_path / "cut")]) == 0
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys()
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) < 1e-3


def test_ddp_and_sync_batchnorm_over_nccl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """headstart's NCCL paths on one GPU: a one-process NCCL group that the helpers are told
    is a wider world (one GPU cannot hold two NCCL ranks), so they take their multi-process
    branches: SyncBatchNorm conversion, the DDP wrapper, tensors reduced on the GPU."""
    import timm
    import torch.distributed as dist

    from headstart.training import distributed

    dist.init_process_group("nccl", init_method=f"file://{tmp_path / 'rdzv'}", rank=0,
                            world_size=1)  # fmt: skip
    monkeypatch.setattr(distributed, "world", lambda: distributed.World(0, 2, 0, "nccl"))
    try:
        model = timm.create_model("test_efficientnet", num_classes=2).to(GPU)
        distributed.sync_batchnorm(model, "train")
        assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
        ddp = distributed.wrap(model, GPU)
        assert isinstance(ddp, torch.nn.parallel.DistributedDataParallel)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
        x, y = torch.randn(8, 3, 64, 64, device=GPU), torch.randint(0, 2, (8,), device=GPU)
        before = next(model.parameters()).detach().clone()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()
        assert not torch.equal(before, next(model.parameters()))
        assert distributed.any_process(True) and not distributed.any_process(False)
        assert distributed.from_main(2.5) == 2.5
        assert distributed.all_sum(torch.ones(1, device=GPU)).item() == 1.0
        counted = distributed.all_sum(torch.tensor(3))  # the epoch's image count, a CPU tensor
        assert counted.device.type == "cpu" and counted.item() == 3
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(torch.cuda.device_count() > 1, reason="checks a one-GPU machine")
def test_torchrun_with_more_processes_than_gpus_is_refused_clearly(
    trainval_dataset: Path, tmp_path: Path
) -> None:
    from tests.unit.test_ddp import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "tests.launch", "--no-progress", "train",
           str(trainval_dataset), *FAST[:-1], "--out", str(tmp_path / "r")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0
    said = done.stdout + done.stderr
    assert "torchrun started 2 processes on this machine, but it has 1 CUDA GPU" in said
    assert "Traceback" not in said
    assert not (tmp_path / "r").exists()
