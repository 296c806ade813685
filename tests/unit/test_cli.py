"""The CLI end to end on a tiny backbone and generated images: train, evaluate, predict, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headstart.cli.main import main
from headstart.training import load_run
from tests.conftest import TINY, make_image
from tests.unit.conftest import FAST


@pytest.fixture
def trainval_dataset(trained_run_once: tuple[Path, Path]) -> Path:
    return trained_run_once[1]


def test_train_writes_a_complete_run_folder(trained_run: Path) -> None:
    names = {p.name for p in trained_run.iterdir()}
    expected = {"config.yaml", "split.json", "metrics.jsonl", "curves.png"}
    assert expected | {"model.safetensors", "manifest.json"} <= names
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["tasks"] == {"class": ["blue", "red"]}
    assert manifest["class_to_idx"] == {"blue": 0, "red": 1}
    assert manifest["backbone"] == TINY and manifest["weights"] == "none"
    assert manifest["preprocessing"]["input_size"] == 160
    assert manifest["strategy"]["name"] == "scratch"
    assert {"torch", "timm", "headstart"} <= set(manifest["versions"])
    lines = (trained_run / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 and {"val_acc", "train_loss"} <= set(json.loads(lines[0]))
    assert (trained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_round_trip_reproduces_predictions(trained_run: Path) -> None:
    run = load_run(trained_run)
    x = torch.randn(2, 3, 160, 160)
    again = load_run(trained_run)
    assert torch.equal(run.model(x)["class"], again.model(x)["class"])
    from safetensors.torch import load_file

    saved = load_file(str(trained_run / "model.safetensors"))
    state = run.model.state_dict()
    assert all(torch.equal(saved[k], state[k]) for k in saved)


def test_evaluate_prints_report_and_writes_png(
    trained_run: Path, trainval_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--no-progress", "evaluate", str(trained_run), str(trainval_dataset)]) == 0
    out = capsys.readouterr().out
    assert "on 12 images" in out and "precision" in out and "true \\ pred" in out
    assert (trained_run / "confusion_matrix.png").is_file()
    ev = json.loads((trained_run / "evaluation.json").read_text())
    assert sum(map(sum, ev["confusion_matrix"])) == 12


def test_predict_json_and_text(
    trained_run: Path, trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    red = trainval_dataset / "val" / "red"
    code = main(["predict", str(trained_run), str(red), str(bad), "--top-k", "2", "--json"])
    assert code == 1  # one input could not be read
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 7
    good = [r for r in results if "predictions" in r]
    assert len(good) == 6
    top = good[0]["predictions"]["class"]
    assert [t["label"] for t in top] in (["red", "blue"], ["blue", "red"])
    assert sum(t["probability"] for t in top) == pytest.approx(1.0, abs=1e-5)
    assert "error" in results[-1]
    assert main(["predict", str(trained_run), str(red / "0.png"), "--top-k", "1"]) == 0
    assert capsys.readouterr().out.startswith(f"{red / '0.png'}: ")


def test_seeded_runs_repeat(split_dataset: Path, tmp_path: Path) -> None:
    args = ["--no-progress", "train", str(split_dataset), *FAST[:-1], "--epochs", "2",
            "--strategy", "scratch", "--lr", "0.01", "--seed", "3"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b")]) == 0
    a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    strip = lambda line: {k: v for k, v in json.loads(line).items() if "seconds" not in k}  # noqa: E731
    assert [strip(x) for x in a] == [strip(x) for x in b]
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert split["layout"] == "split" and len(split["val"]) == 8


def test_config_file_with_cli_override(split_dataset: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"data: {{root: {split_dataset}, num_workers: 0}}\n"
        f"model: {{backbone: {TINY}}}\noptim: {{epochs: 5, batch_size: 8}}\n"
    )
    out = tmp_path / "run"
    assert main(["--no-progress", "train", "--config", str(cfg), "--epochs", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 1
    assert "epochs: 1" in (out / "config.yaml").read_text()


def test_a_finished_run_is_not_overwritten(trained_run: Path, trainval_dataset: Path) -> None:
    before = (trained_run / "model.safetensors").read_bytes()
    args = ["--no-progress", "train", str(trainval_dataset), *FAST[:-1], "--epochs", "1",
            "--out", str(trained_run)]  # fmt: skip
    assert main(args) == 2
    assert (trained_run / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "{data}", "--backbone", "resnet81"], "did you mean resnet18"),
        (["train", "{missing}"], "does not exist"),
        (
            ["train", "{data}", "--strategy", "magic"],
            "probe, partial, finetune, gradual, lp-ft, scratch",
        ),
        (["evaluate", "{missing}", "{data}"], "run folder"),
        (["predict", "{data}", "{data}"], "no manifest.json"),
        (["train", "{single}"], "only one class"),
        (["train", "{empty}"], "no usable image"),
    ],
)
def test_errors_are_one_paragraph_without_traceback(
    args: list[str], needle: str, split_dataset: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    make_image(tmp_path / "single" / "red" / "0.png", (200, 0, 0))
    make_image(tmp_path / "empty" / "red" / "0.png", (200, 0, 0))
    (tmp_path / "empty" / "blue").mkdir()
    places = {"data": split_dataset, "missing": tmp_path / "missing"}
    places |= {"single": tmp_path / "single", "empty": tmp_path / "empty"}
    filled = [a.format(**places) for a in args]
    assert main(filled) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err.replace("\n", " ")
    assert "Traceback" not in err


def test_corrupt_checkpoint_is_refused(
    trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = trained_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["predict", str(trained_run), str(trained_run / "curves.png")]) == 2
    assert "corrupt" in capsys.readouterr().err
    (trained_run / "manifest.json").write_text("{not json")
    assert main(["predict", str(trained_run), str(trained_run / "curves.png")]) == 2
    assert "not valid JSON" in " ".join(capsys.readouterr().err.split())


def test_python_dash_m_lists_backbones() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "headstart", "backbones"], capture_output=True, text=True, check=True
    ).stdout
    assert "tf_efficientnet_lite0 *" in out and "yes (package" in out
    assert "resnet18" in out and "vit_b_16" in out


def test_unreadable_image_in_training_data_is_skipped(split_dataset: Path, tmp_path: Path) -> None:
    make_image(split_dataset / "red" / "imageNotFound.png", (0, 0, 0))
    out = tmp_path / "r"
    assert main(["--no-progress", "train", str(split_dataset), *FAST[:-1], "--epochs", "1",
                 "--out", str(out)]) == 0  # fmt: skip
    split = json.loads((out / "split.json").read_text())
    assert [s[0] for s in split["skipped"]] == ["red/imageNotFound.png"]


def test_inspect_shows_stages_trainable_sets_and_lrs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "layer4" in out and "8,393,728" in out
    assert out.rstrip().endswith("11,177,538     1,026")  # the probe trains only the head
    assert main(["inspect", "resnet18", "--strategy", "partial", "--unfreeze-from", "layer4"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("8,394,754")
    assert main(["inspect", "resnet18", "--strategy", "partial", "--unfreeze-from", "auto"]) == 0
    out = capsys.readouterr().out  # no data to choose from: the default, said so
    assert "8,394,754" in out and "train chooses the stage from the data" in out
    assert out.rstrip().endswith("the default, layer4")
    assert main(["inspect", "resnet18", "--strategy", "gradual", "--unfreeze-every", "3"]) == 0
    assert "epoch 4+" in capsys.readouterr().out


def test_compare_races_strategies(
    trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"
    code = main(["--no-progress", "compare", str(trainval_dataset), *FAST[:-1], "--strategies",
                 "probe,finetune", "--epochs", "2", "--out", str(out)])  # fmt: skip
    assert code == 0
    text = capsys.readouterr().out
    assert "winner:" in text and "s/epoch" in text
    report = json.loads((out / "compare.json").read_text())
    assert [r["strategy"] for r in report["rows"]] == ["probe", "finetune"]
    assert [len(r["val_acc_per_epoch"]) for r in report["rows"]] == [1, 2]  # probe: L-BFGS
    assert report["rows"][0]["trainable_params"][0] < report["rows"][1]["trainable_params"][0]
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "probe" / "manifest.json").is_file()


def test_compare_refuses_unknown_strategies(
    trainval_dataset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(trainval_dataset), "--strategies", "probe,magic"]) == 2
    assert "unknown: magic" in capsys.readouterr().err


def test_the_suggested_train_command_keeps_what_decides_the_data_and_split() -> None:
    """recommend's and lr-find's "train it:" lines: the images root, the tasks and a
    non-default split must survive, quoted, so the command runs on the same held-out images."""
    import shlex

    from headstart.cli.commands import _data_args, config_from_args
    from headstart.cli.main import build_parser

    argv = ["train", "--labels", "my data/t.csv", "--images-root", "my data/img", "--tasks",
            "a,b", "--val-fraction", "0.3", "--seed", "5"]  # fmt: skip
    cfg = config_from_args(build_parser().parse_args(argv))
    again = config_from_args(build_parser().parse_args(["train", *shlex.split(_data_args(cfg))]))
    assert again.data == cfg.data and again.seed == 5
    assert "--seed" not in _data_args(cfg, split=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["predict", "RUN", "IMG", "--top-k", "0"],
            "--top-k: '0': expected a whole number of at least 1",
        ),
        (["evaluate", "RUN", "--batch-size", "-1"], "--batch-size: '-1': expected a whole number"),
        (["cv", "DATA", "--folds", "1"], "--folds: '1': expected a whole number of at least 2"),
        (["export", "RUN", "--opset", "24"], "--opset: '24': expected a whole number from 7 to 23"),
        (["serve", "RUN", "--port", "70000"], "--port: '70000': expected a whole number from 0 to"),
        (["serve", "RUN", "--max-file-mb", "nan"], "--max-file-mb: 'nan': expected a number"),
        # choices come from the config's Literal fields: every one the loop knows, no other
        (["train", "D", "--bn", "on"], "--bn: invalid choice: 'on'"),
        (["train", "D", "--precision", "fp8"], "--precision: invalid choice: 'fp8'"),
        (["cv", "D", "--keep", "first"], "--keep: invalid choice: 'first'"),
    ],
)
def test_bad_numbers_and_choices_are_usage_errors_before_anything_loads(
    argv: list[str], message: str, capsys: pytest.CaptureFixture
) -> None:
    with pytest.raises(SystemExit) as stop:  # argparse's usage error: nothing read or loaded
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_inspect_checks_strategy_options_like_train(capsys: pytest.CaptureFixture) -> None:
    assert main(["inspect", TINY, "--strategy", "finetune", "--lr-decay", "-1"]) == 2
    assert "ConfigError: --lr-decay -1.0; expected a factor above 0." in capsys.readouterr().err


@pytest.mark.parametrize("option", [["--tasks", "type"], ["--images-root", "."]])
def test_labels_csv_options_on_a_folder_are_refused(
    option: list[str], trainval_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", str(trainval_dataset), *FAST[:-1], *option, "--out", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"ConfigError: {option[0]} is an option of a labels CSV (--labels)" in err
    assert not (tmp_path / "r").exists()
