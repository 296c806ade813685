"""Fixtures shared by the unit tests: one tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from headstart.cli.main import main
from tests.conftest import TINY, make_class_folders, make_trainval

FAST = ["--backbone", TINY, "--batch-size", "8", "--workers", "0", "--no-progress"]


@pytest.fixture(scope="session")
def trained_run_once(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny training run shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("cli")
    trainval_dataset = make_trainval(root / "tv")
    out = root / "runs" / "tiny"
    code = main(["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--strategy",
                 "scratch", "--epochs", "3", "--lr", "0.01", "--out", str(out)])  # fmt: skip
    assert code == 0
    return out, trainval_dataset


@pytest.fixture(scope="module")
def odd_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train/val folders with odd counts (25 and 7 images): two processes must pad (and the
    padding must not count), and batches of 8, 4 or 2 leave a last batch of one image."""
    root = tmp_path_factory.mktemp("odd")
    make_class_folders(root / "train", {"red": 13, "blue": 12})
    make_class_folders(root / "val", {"red": 4, "blue": 3}, seed=1000)
    return root


@pytest.fixture
def trained_run(trained_run_once: tuple[Path, Path], tmp_path: Path) -> Path:
    """A private copy of the shared run (tests may damage it)."""
    copy = tmp_path / "run"
    shutil.copytree(trained_run_once[0], copy)
    return copy


def train_cli(argv: list[str], out: Path, capsys: pytest.CaptureFixture) -> tuple[str, dict]:
    """Run ``headstart`` with ``argv`` + ``--out out``; (what it printed, the run's manifest)."""
    import json

    assert main([*argv, "--out", str(out)]) == 0
    return capsys.readouterr().out, json.loads((out / "manifest.json").read_text())


def with_and_without(
    option: list[str], data: Path, out: Path, capsys: pytest.CaptureFixture, epochs: int = 3
) -> tuple[list[dict], list[dict], dict]:
    """A tiny float32 fine-tune trained twice, into ``out/plain`` and ``out/with``, without
    and with ``option``: both runs' ``metrics.jsonl`` lines and the second's manifest."""
    import json

    argv = ["--no-progress", "train", str(data), *FAST[:-1], "--strategy", "finetune",
            "--epochs", str(epochs), "--precision", "fp32", "--lr", "1e-3"]  # fmt: skip
    train_cli(argv, out / "plain", capsys)
    _, manifest = train_cli([*argv, *option], out / "with", capsys)
    lines = [(out / run / "metrics.jsonl").read_text().splitlines() for run in ("plain", "with")]
    plain, other = ([json.loads(line) for line in run] for run in lines)
    return plain, other, manifest


def served_val_loss(run_dir: Path) -> float:
    """The validation loss of the run's model as predict and serve run it."""
    from headstart.evaluation.evaluate import _scores, cached_reader
    from headstart.evaluation.sources import eval_samples
    from headstart.runtime.engines import load_engine
    from headstart.runtime.predictor import Predictor

    engine = load_engine(run_dir)  # what `headstart predict RUN` runs
    samples, _, _ = eval_samples(engine.run, None)
    logits, targets = _scores(Predictor(engine), samples, cached_reader(engine.run.preprocessing),
                              raw=True, batch_size=8, progress=False)  # fmt: skip
    (z,), (y,) = logits.values(), targets.values()
    return float(torch.nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y)))
