"""--accumulate N: N batches' gradients summed into one optimizer step give the weights a
batch N times larger gives (the last step of an epoch short), and a solved probe says that
it changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from headstart.cli.main import main
from headstart.training.accumulation import Accumulation
from tests.unit.conftest import FAST


def _train(data: Path, out: Path, *extra: str) -> tuple[dict, list[dict], str]:
    argv = ["--no-progress", "train", str(data), *FAST[:-1], "--strategy", "finetune",
            "--epochs", "2", "--precision", "fp32", "--lr", "1e-3", "--out", str(out),
            *extra]  # fmt: skip
    assert main(argv) == 0
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(out / "model.safetensors")), history, (out / "config.yaml").read_text()


def test_accumulated_steps_equal_the_larger_batch(
    odd_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    big, big_history, _ = _train(odd_data, tmp_path / "big")  # --batch-size 8 (FAST)
    small, small_history, _ = _train(odd_data, tmp_path / "small", "--batch-size", "2")
    acc, acc_history, config = _train(
        odd_data, tmp_path / "acc", "--batch-size", "2", "--accumulate", "4"
    )
    assert "accumulate: 4" in config
    printed = capsys.readouterr().out
    assert "accumulate: 4 batches of 2 per optimizer step (the step of a batch of 8)" in printed
    moved = [k for k in big if not torch.equal(big[k], small[k])]
    assert moved  # batches of 2 take other steps than batches of 8 ...
    for k in big:  # ... and four of them summed take the same steps
        assert torch.allclose(acc[k], big[k], rtol=1e-4, atol=1e-5), k
    # the schedule counted optimizer steps: the same learning rates, epoch by epoch
    assert [h["lr"] for h in acc_history] == pytest.approx([h["lr"] for h in big_history])
    assert [h["lr"] for h in small_history] != pytest.approx([h["lr"] for h in big_history])
    assert acc_history[-1]["train_loss"] == pytest.approx(big_history[-1]["train_loss"], rel=1e-4)


def test_the_weights_of_a_step_follow_its_images_the_last_step_short() -> None:
    a = Accumulation(every=4, batches=13, size=2, images=25)  # 2 x 12 + 1
    assert a.steps == 4
    ends = [b for b in range(13) if a.ends_step(b)]
    assert ends == [3, 7, 11, 12]
    assert [a.share(b, 2) for b in range(12)] == [0.25] * 12
    assert a.share(12, 1) == 1.0  # a step of one image


def test_ddp_exchanges_gradients_on_a_steps_last_batch_only() -> None:
    calls: list[str] = []

    class FakeDDP(torch.nn.Module):
        @contextmanager
        def no_sync(self) -> Iterator[None]:
            calls.append("held")
            yield

    a = Accumulation(every=3, batches=5, size=4, images=20)
    for b in range(5):
        with a.syncing(FakeDDP(), b):
            pass
        with a.syncing(torch.nn.Linear(1, 1), b):  # one process: nothing to hold
            pass
    assert calls == ["held"] * 3  # batches 0, 1 and 3; 2 and 4 end steps


def test_a_solved_probe_says_accumulation_changes_nothing_and_zero_is_refused(
    odd_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["--no-progress", "train", str(odd_data), *FAST[:-1], "--strategy", "probe",
            "--accumulate", "2", "--out", str(tmp_path / "probe")]  # fmt: skip
    assert main(argv) == 0
    assert "note: --accumulate changes nothing here" in capsys.readouterr().out
    assert main([*argv[:-4], "--accumulate", "0", "--out", str(tmp_path / "zero")]) != 0
    err = capsys.readouterr().err
    assert "--accumulate 0; expected at least 1." in err
    assert "Traceback" not in err
