"""Errors that are not bad input: running out of memory or disk says how to fit, a bug says it
is one with its traceback in a file, and neither prints a traceback or loses a saved epoch."""

from __future__ import annotations

import errno
import tempfile
from pathlib import Path

import pytest

from headstart.cli import commands
from headstart.cli.main import main
from headstart.training.history import EpochStats
from tests.unit.conftest import FAST


def flat(text: str) -> str:
    return " ".join(text.split())


def _failing(error: BaseException):
    def command(args: object) -> int:
        raise error

    return command


@pytest.fixture
def crash_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.delenv("HEADSTART_DEBUG", raising=False)
    return tmp_path


def test_a_bug_is_one_paragraph_with_the_traceback_in_a_file(
    crash_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setattr(commands, "backbones", _failing(ZeroDivisionError("boom")))
    assert main(["backbones"]) == 1
    err = flat(capsys.readouterr().err)
    assert err.startswith("internal error: ZeroDivisionError: boom. This is a bug in headstart")
    assert "Traceback" not in err
    (written,) = crash_dir.glob("headstart-crash-*.txt")
    assert str(written) in err
    assert "Traceback" in written.read_text() and "boom" in written.read_text()


def test_headstart_debug_lets_the_exception_through(
    crash_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(commands, "backbones", _failing(ZeroDivisionError("boom")))
    monkeypatch.setenv("HEADSTART_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["backbones"])


@pytest.mark.parametrize(
    ("error", "needle"),
    [
        (MemoryError(), "error: OutOfMemory: this machine ran out of memory"),
        (OSError(errno.ENOSPC, "No space left on device", "/x/y"), "error: DiskFull: no space"),
    ],
)
def test_the_machines_limits_say_how_to_fit(
    error: BaseException, needle: str, crash_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    monkeypatch.setattr(commands, "backbones", _failing(error))
    assert main(["backbones"]) == 1
    err = flat(capsys.readouterr().err)
    assert err.startswith(needle) and "bug" not in err
    assert not list(crash_dir.glob("headstart-crash-*"))  # not a bug: no traceback file


def test_out_of_memory_mid_training_says_how_to_resume(
    split_dataset: Path, crash_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    real, calls = EpochStats.line, []

    def second_epoch_runs_out(self: EpochStats, epochs: int) -> str:
        calls.append(self)
        if len(calls) == 2:
            raise MemoryError
        return real(self, epochs)

    monkeypatch.setattr(EpochStats, "line", second_epoch_runs_out)
    out = crash_dir / "run"
    argv = ["--no-progress", "train", str(split_dataset), *FAST[:-1], "--strategy", "scratch",
            "--epochs", "3", "--lr", "0.01", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = flat(capsys.readouterr().err)
    assert "OutOfMemory" in err and "--batch-size" in err
    assert f"continue with `headstart train --resume {out}`" in err
    assert (out / "resume" / "state.json").exists()
    monkeypatch.setattr(EpochStats, "line", real)
    assert main(["--no-progress", "train", "--resume", str(out)]) == 0
    assert (out / "model.safetensors").exists()
