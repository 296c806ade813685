"""Resume: a real training process killed (SIGKILL) or interrupted (SIGINT) mid-run, then
resumed, ends with weights bit-identical to a run that was never stopped; --overwrite never
destroys a finished run before its replacement has finished."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from headstart.cli.main import main
from tests.conftest import TINY, make_class_folders

ROOT = Path(__file__).resolve().parents[2]
# gradual: phase changes add optimizer groups; dropout and colour jitter use every RNG;
# --ema: the weights' average is saved and resumed too (it is what the run ships);
# --mixup and --cutmix: a resumed step mixes as the uninterrupted run did;
# --accumulate: a Ctrl-C waits for the end of an optimizer step (two batches)
ARGS = ["--backbone", TINY, "--strategy", "gradual", "--epochs", "4", "--batch-size", "8",
        "--workers", "0", "--dropout", "0.3", "--color-jitter", "0.2", "--ema", "1",
        "--mixup", "0.4", "--cutmix", "1", "--accumulate", "2"]  # fmt: skip
LAUNCH = "import sys, tests.conftest; from headstart.cli.main import main; sys.exit(main())"


def _start(data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``headstart train`` in its own process (the tiny backbone registered there too)."""
    cmd = [sys.executable, "-c", LAUNCH, "--no-progress", "train", str(data), *ARGS,
           "--out", str(out), *extra]  # fmt: skip
    return subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _wait_for_epoch(state: Path, proc: subprocess.Popen, epoch: int = 1) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if json.loads(state.read_text())["epoch"] >= epoch:
                return
        except (OSError, ValueError, KeyError):
            pass
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("no saved state after 120 s")


def _stop_mid_epoch(data: Path, out: Path, signum: int) -> subprocess.Popen:
    """Start a run and send ``signum`` a little after its first saved epoch (mid-epoch 2)."""
    proc = _start(data, out)
    _wait_for_epoch(out / "resume" / "state.json", proc)
    time.sleep(0.15)  # into the next epoch's steps
    proc.send_signal(signum)
    return proc


def _weights(run: Path) -> dict:
    return load_file(str(run / "model.safetensors"))


def _identical(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(
        wa[k].dtype == wb[k].dtype and bool((wa[k] == wb[k]).all()) for k in wa
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """96 training images, 12 steps an epoch: time to be stopped in the middle of one."""
    return make_class_folders(tmp_path_factory.mktemp("resume") / "d", {"red": 60, "blue": 60})


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run, never stopped."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _start(data, out)
    assert proc.wait(300) == 0, proc.communicate()
    return out


def test_sigkill_mid_run_then_resume_is_bit_identical(
    data: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    _stop_mid_epoch(data, out, signal.SIGKILL).wait(30)
    assert not (out / "manifest.json").exists()
    # rerunning the original command says how to resume, and does not start over
    again = _start(data, out)
    _, err = again.communicate(timeout=120)
    assert again.returncode == 2
    err = " ".join(err.split())  # the CLI wraps messages at 100 columns
    assert "holds an unfinished run" in err and f"headstart train --resume {out}" in err
    assert main(["--no-progress", "train", "--resume", str(out)]) == 0
    assert _identical(reference, out)
    assert not (out / "resume").exists()  # a finished run keeps no training state
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_ctrl_c_stops_after_the_step_saves_and_resumes_bit_identically(
    data: Path, reference: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = _stop_mid_epoch(data, out, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    err = " ".join(err.split())
    assert f"Continue with: headstart train --resume {out}" in err
    state = json.loads((out / "resume" / "state.json").read_text())
    assert state["epoch"] >= 1 and not state["done"]
    assert state["batch"] % 2 == 0  # stopped at the end of an optimizer step
    assert main(["--no-progress", "train", "--resume", str(out)]) == 0
    assert _identical(reference, out)


def test_a_killed_overwrite_keeps_the_finished_run(
    data: Path, reference: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    proc = _start(data, out, "--epochs", "2")  # a finished run to protect
    assert proc.wait(300) == 0
    before = (out / "model.safetensors").read_bytes()
    proc = _start(data, out, "--overwrite")
    _wait_for_epoch(tmp_path / "run.unfinished" / "resume" / "state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert (out / "model.safetensors").read_bytes() == before  # untouched, still loadable
    from headstart.training import load_run

    assert load_run(out).manifest["metrics"]["val_acc"] >= 0
    assert main(["--no-progress", "train", "--resume", str(out)]) == 0
    assert _identical(reference, out)  # the replacement finished and took its place
    assert not (tmp_path / "run.unfinished").exists()


def test_resume_refuses_changed_data(data: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    out = tmp_path / "run"
    proc = _start(copy, out)
    _wait_for_epoch(out / "resume" / "state.json", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    make_class_folders(copy, {"red": 1}, seed=999)  # one image's content changed
    with pytest.raises(Exception, match="data changed since it started"):
        from headstart.training.train import resume_run

        resume_run(out, progress=False)


def test_resume_of_a_finished_or_missing_run_says_why(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["train", "--resume", str(trained_run)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "holds a finished run; there is nothing to resume" in err
    assert main(["train", "--resume", str(tmp_path / "nothing")]) == 2
    assert "is not a run folder" in " ".join(capsys.readouterr().err.split())


def test_compare_resume_keeps_finished_members_and_continues_the_interrupted_one(
    data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from headstart.training import loop

    out = tmp_path / "cmp"
    argv = ["--no-progress", "compare", str(data), "--backbone", TINY, "--batch-size", "8",
            "--workers", "0", "--epochs", "2", "--strategies", "probe,gradual",
            "--out", str(out)]  # fmt: skip
    real_enter = loop._StopOnInterrupt.__enter__

    def ctrl_c_during_gradual(self: loop._StopOnInterrupt) -> loop._StopOnInterrupt:
        self.requested = (out / "probe" / "manifest.json").exists()  # as if Ctrl-C came
        return real_enter(self)

    monkeypatch.setattr(loop._StopOnInterrupt, "__enter__", ctrl_c_during_gradual)
    assert main(argv) == 130
    assert (out / "probe" / "manifest.json").exists()
    state = json.loads((out / "gradual" / "resume" / "state.json").read_text())
    assert state["epoch"] == 0 and state["batch"] == 1  # stopped after its first step
    probe_weights = (out / "probe" / "model.safetensors").read_bytes()
    monkeypatch.undo()
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"kept {out / 'probe'}: finished earlier" in printed
    assert f"resuming {out / 'gradual'}: 0 of 2 epochs done, 1 step(s) into the next" in printed
    assert (out / "probe" / "model.safetensors").read_bytes() == probe_weights
    rows = json.loads((out / "compare.json").read_text())["rows"]
    assert [r["strategy"] for r in rows] == ["probe", "gradual"]
    kept = json.loads((out / "probe" / "manifest.json").read_text())["seconds"]
    assert rows[0]["total_seconds"] == kept > 0  # the kept run's own time, not this call's
    # the continued member equals one trained without a stop
    assert main([*argv[:-1], str(tmp_path / "again"), "--strategies", "gradual"]) == 0
    assert _identical(tmp_path / "again" / "gradual", out / "gradual")


def test_a_full_cache_disk_warns_once_and_training_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import errno

    import numpy as np

    from headstart.cache import store

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_WARNED", set())
    monkeypatch.setattr(np, "save", full)
    root = make_class_folders(tmp_path / "d", {"red": 4, "blue": 4})
    argv = ["--no-progress", "train", str(root), "--backbone", TINY, "--batch-size", "4",
            "--workers", "0", "--epochs", "1", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert err.count("warning: cannot write to the cache") == 1 and "the disk is full" in err
    assert (tmp_path / "run" / "model.safetensors").exists()
