"""torchrun: a real 2-process DistributedDataParallel training on the CPU (gloo, tiny model):
one run folder written by rank 0, the same evaluation count as one process, and gradual
unfreezing that keeps frozen stages fixed and moves the unfrozen ones identically on every
rank, its gradients accumulated over two batches a step (exchanged on the second only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headstart.cli.main import main
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[2]
# on the CPUs with gloo wherever the tests run (a one-GPU machine cannot hold 2 NCCL ranks)
ARGS = ["--backbone", TINY, "--batch-size", "8", "--workers", "0", "--epochs", "3",
        "--lr", "0.01", "--no-warm-head", "--device", "cpu"]  # fmt: skip


def free_port() -> int:
    """A TCP port nothing listens on now (for torchrun's rendezvous)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(data: Path, out: Path, dump: Path, *extra: str) -> subprocess.CompletedProcess:
    dump.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "tests.launch", "--no-progress", "train",
           str(data), *ARGS, "--out", str(out), "--cache-dir", str(out.parent / "cache"),
           *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HEADSTART_TEST_DUMP": str(dump),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def gradual_ddp(odd_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A 2-process gradual-unfreezing run: (run folder, per-rank dumps, what it printed)."""
    tmp = tmp_path_factory.mktemp("gradual")
    done = _torchrun(odd_data, tmp / "run", tmp / "dump", "--strategy", "gradual",
                     "--unfreeze-every", "1", "--lr", "auto", "--accumulate", "2")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp / "run", tmp / "dump", done.stdout


def test_two_processes_write_one_run_and_evaluate_every_image_once(
    gradual_ddp: tuple[Path, Path, str], odd_data: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    run, _, printed = gradual_ddp
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["distributed"] == {"processes": 2, "backend": "gloo", "global_batch": 8,
                                       "per_process_batch": 4}  # fmt: skip
    assert printed.count("ddp: 2 processes (gloo), global batch 8 = 2 x 4") == 1  # rank 0 only
    assert printed.count("best val_acc") == 1
    # --lr auto: one range test, on rank 0, in global batches over all 25 training images
    # (not a process's 4); both ranks then trained at its pick (the next test)
    assert printed.count("lr-find: base LR") == 1
    found = manifest["lr_find"]
    assert found["batch_size"] == 16  # --accumulate 2: two global batches a step
    assert found["steps"] / found["epochs"] == pytest.approx(2)  # ceil(25 / 16) steps a pass
    assert manifest["strategy"]["lr"] == found["pick"]
    assert sorted(p.name for p in run.parent.iterdir()) == ["cache", "dump", "run"]  # no stray
    assert not (run / "resume").exists()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3  # one line per epoch: one writer
    # 7 validation images over 2 processes: 4 each with one padded duplicate, counted once
    assert json.loads(lines[-1])["val_n"] == 7
    assert main(["--no-progress", "train", str(odd_data), *ARGS, "--strategy", "gradual",
                 "--unfreeze-every", "1", "--lr", "auto",
                 "--out", str(tmp_path / "one")]) == 0  # fmt: skip
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert one["metrics"]["val_n"] == manifest["metrics"]["val_n"] == 7
    assert one["distributed"] is None


def test_gradual_under_ddp_moves_unfrozen_stages_identically_and_keeps_frozen_ones(
    gradual_ddp: tuple[Path, Path, str],
) -> None:
    _, dump, _ = gradual_ddp
    ranks = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["before"] == ranks[1]["before"]  # the same start on both
    assert ranks[0]["after"] == ranks[1]["after"]  # every parameter equal after training
    trained = set(ranks[0]["trained_stages"])
    frozen = [n for s, names in ranks[0]["stages"].items() if s not in trained for n in names]
    moved = [n for s, names in ranks[0]["stages"].items() if s in trained for n in names]
    assert frozen and moved
    assert all(ranks[0]["after"][n] == ranks[0]["before"][n] for n in frozen)
    assert all(ranks[0]["after"][n] != ranks[0]["before"][n] for n in moved)


def test_other_commands_refuse_to_run_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, trained_run: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["--no-progress", "evaluate", str(trained_run), "--no-analysis"]) == 2
    assert "only `headstart train` runs under torchrun" in capsys.readouterr().err


def test_every_process_takes_the_backend_of_the_run_device_and_gpus_must_cover_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """NCCL only when the run trains on CUDA, with one GPU per process: two processes on a
    one-GPU machine are refused up front (rank 0 on NCCL and rank 1 on gloo would hang)."""
    import torch

    from headstart.errors import ConfigError
    from headstart.training import distributed

    joined: list[str] = []
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed.dist, "init_process_group",
                        lambda backend, **_: joined.append(backend))  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: joined.append(f"cuda:{i}"))
    for k, v in {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match="2 processes on this machine, but it has 1 CUDA GPU"):
        distributed.init_from_env("auto")
    assert joined == []
    distributed.init_from_env("cpu")  # the CPUs: gloo, whatever GPUs there are
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    distributed.init_from_env("auto")
    assert joined == ["gloo", "cuda:1", "nccl"]


def _processes_naming(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_text():
                found.append(int(entry.name))
        except OSError:
            pass
    return found


def test_a_killed_ddp_run_resumes_under_torchrun(odd_data: Path, tmp_path: Path) -> None:
    import signal
    import time

    out, dump = tmp_path / "run", tmp_path / "dump"
    dump.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-port", str(free_port()), "-m", "tests.launch", "--no-progress", "train",
           str(odd_data), *ARGS, "--epochs", "8", "--patience", "100", "--strategy", "finetune",
           "--out", str(out),
           "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HEADSTART_TEST_DUMP": str(dump),
           "OMP_NUM_THREADS": "1"}  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    state = out / "resume" / "state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text() or "{}").get("epoch", 0) >= 1:
            break
        time.sleep(0.05)
    for pid in _processes_naming(str(out)):  # torchrun and both workers, mid-run (the
        os.kill(pid, signal.SIGKILL)  # workers run in sessions of their own)
    proc.wait()
    assert not (out / "manifest.json").exists() and state.is_file()
    resume = [*cmd[:5], "--master-port", str(free_port()), "-m", "tests.launch",
              "--no-progress", "train", "--resume", str(out)]  # fmt: skip
    done = subprocess.run(resume, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("resuming") == 1  # rank 0 speaks
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "manifest.json").read_text())["distributed"]["processes"] == 2
