"""Multi-task: a labels CSV, one backbone with a head per task, masked and weighted losses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from headstart.cli.main import main
from headstart.config import TrainConfig
from headstart.data import MISSING, load_table_split, read_labels_csv
from headstart.errors import DataError
from headstart.evaluation import evaluate_run
from headstart.model import Classifier
from headstart.serve import Predictor
from headstart.training import load_run, train
from headstart.training.objective import Objective, balanced_class_weights
from tests.conftest import TINY, make_image

COLOUR = {"red": (200, 40, 40), "blue": (40, 40, 200)}


def make_table(root: Path, n: int = 24, blank_every: int = 5) -> Path:
    """Images whose colour is task ``colour`` and whose size is task ``size``; every
    ``blank_every``-th row has no ``size`` label."""
    lines = ["image,colour,size"]
    for i in range(n):
        colour = "red" if i % 2 else "blue"
        size = "big" if (i // 2) % 2 else "small"
        px = 64 if size == "big" else 32
        make_image(root / "img" / f"{i}.png", COLOUR[colour], size=px, seed=i)
        lines.append(f"img/{i}.png,{colour},{'' if i % blank_every == 0 else size}")
    (root / "tasks.csv").write_text("\n".join(lines) + "\n")
    return root / "tasks.csv"


def _train(csv: Path, out: Path, **over: object) -> dict:
    overrides = {"data.labels": str(csv), "out": str(out), "model.backbone": TINY,
                 "data.num_workers": 0, "optim.epochs": 3, "optim.batch_size": 8}  # fmt: skip
    overrides.update(over)
    train(TrainConfig().with_overrides(overrides), echo=lambda s: None, progress=False)
    return json.loads((out / "manifest.json").read_text())


def test_csv_blank_cells_are_missing_labels(tmp_path: Path) -> None:
    table = read_labels_csv(make_table(tmp_path))
    assert table.tasks == {"colour": ["blue", "red"], "size": ["big", "small"]}
    by_name = {s.path.name: s.target for s in table.samples}
    assert by_name["0.png"] == {"colour": 0, "size": MISSING}
    assert by_name["3.png"] == {"colour": 1, "size": 0}


@pytest.mark.parametrize("sep", [";", "\t"])
def test_semicolon_and_tab_separated_csvs_read_like_commas(tmp_path: Path, sep: str) -> None:
    """Spreadsheets in locales with a decimal comma save with semicolons; paths may then
    hold commas."""
    comma = read_labels_csv(make_table(tmp_path))
    (tmp_path / "img" / "0.png").rename(tmp_path / "img" / "0,a.png")
    text = (tmp_path / "tasks.csv").read_text().replace(",", sep).replace("/0.png", "/0,a.png")
    (tmp_path / "other.csv").write_text(text)
    other = read_labels_csv(tmp_path / "other.csv")
    assert other.tasks == comma.tasks and len(other.samples) == len(comma.samples)
    assert other.samples[0].path.name == "0,a.png"
    assert [s.target for s in other.samples] == [s.target for s in comma.samples]


@pytest.mark.parametrize(
    ("csv_text", "tasks", "message"),
    [
        ("picture,colour\nimg/9.png,red\n", None, "no image column. Its header is"),
        ("image,colour,size\nimg/0.png,red,big\n", ["shape"], "--tasks shape: no such column"),
        ("image,colour\nimg/0.png,red\nimg/404.png,blue\n", None, "line 3: image 'img/404.png'"),
        ("image,colour,size\nimg/0.png,red,big\nimg/1.png,blue,big\n", None, "'size' in"),
    ],
)
def test_malformed_csv_names_the_row_or_column(
    tmp_path: Path, csv_text: str, tasks: list[str] | None, message: str
) -> None:
    for i in range(2):
        make_image(tmp_path / "img" / f"{i}.png", (1, 2, 3))
    (tmp_path / "bad.csv").write_text(csv_text)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(".", r"\.")):
        read_labels_csv(tmp_path / "bad.csv", tasks=tasks)


def test_split_is_stratified_on_label_combinations(tmp_path: Path) -> None:
    split = load_table_split(make_table(tmp_path, n=40), val_fraction=0.25, seed=0)
    assert len(split.val) == 10 and len(split.train) == 30
    combos = {(s.target["colour"], s.target["size"]) for s in split.val}
    assert len(combos) >= 4  # every colour x size (and missing) combination is represented
    assert "colour: red" in split.summary() and "(no label)" in split.summary()


def test_masked_labels_add_no_loss_and_weights_scale_it() -> None:
    logits = {"a": torch.randn(4, 3), "b": torch.randn(4, 2)}
    y = {"a": torch.tensor([0, 1, 2, 1]), "b": torch.tensor([MISSING] * 4)}
    plain = Objective()
    only_a = torch.nn.functional.cross_entropy(logits["a"], y["a"])
    assert torch.allclose(plain.loss(logits, y), only_a)  # task b has no label: adds zero
    y["b"] = torch.tensor([0, MISSING, 1, MISSING])
    b = torch.nn.functional.cross_entropy(logits["b"][[0, 2]], y["b"][[0, 2]])
    weighted = Objective(task_weights={"b": 2.0}).loss(logits, y)
    assert torch.allclose(weighted, only_a + 2 * b)
    counts = Objective.counts(logits, y)
    assert counts["b"][1] == 2  # accuracy counts only labelled samples


def test_task_names_that_are_module_attributes_work() -> None:
    model = Classifier(torch.nn.Flatten(), 12, {"type": 2, "train": 3})
    out = model(torch.zeros(1, 3, 2, 2))
    assert {k: v.shape[1] for k, v in out.items()} == {"type": 2, "train": 3}


def test_balanced_class_weights() -> None:
    w = balanced_class_weights([0, 0, 0, 1, MISSING], 3)
    assert torch.allclose(w, torch.tensor([4 / 9, 4 / 3, 1.0]))


def test_multitask_training_trains_every_head_and_round_trips(tmp_path: Path) -> None:
    csv = make_table(tmp_path)
    m = _train(csv, tmp_path / "run", **{"optim.task_weights": {"size": 2.0}})
    assert m["tasks"] == {"colour": ["blue", "red"], "size": ["big", "small"]}
    assert m["task_weights"] == {"colour": 1.0, "size": 2.0}
    assert set(m["metrics"]["val_acc_per_task"]) == {"colour", "size"}
    assert m["metrics"]["val_acc"] == pytest.approx(
        sum(m["metrics"]["val_acc_per_task"].values()) / 2
    )
    run = load_run(tmp_path / "run")
    for key, head in run.model.heads.items():  # zero-initialised: a head that trained moved
        assert head[1].weight.abs().sum() > 0, f"head {key} did not train"
    ev = evaluate_run(tmp_path / "run", device="cpu", progress=False)
    assert set(ev.tasks) == {"colour", "size"}
    aucs = [t.roc.headline for t in ev.tasks.values()]  # both tasks have two classes
    assert ev.mean_auc == pytest.approx(sum(aucs) / 2)
    assert ev.tasks["colour"].accuracy == pytest.approx(m["metrics"]["val_acc_per_task"]["colour"])
    assert (tmp_path / "run" / "confusion_matrix_size.png").is_file()
    preds = Predictor.from_run(tmp_path / "run", "cpu").predict_paths(
        [tmp_path / "img" / "0.png", tmp_path / "img" / "1.png"], top_k=1
    )
    assert [sorted(p.top) for p in preds] == [["colour", "size"]] * 2


def test_train_cli_with_labels_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = make_table(tmp_path)
    args = ["--no-progress", "train", "--labels", str(csv), "--tasks", "colour,size",
            "--task-weights", "colour=1,size=2", "--class-weights", "balanced",
            "--backbone", TINY, "--workers", "0", "--batch-size", "8", "--epochs", "2",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "heads colour (2 classes), size (2 classes)" in out and "(colour " in out
    assert main(["--no-progress", "evaluate", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "task size: accuracy" in out and "mean ROC AUC" in out and "over 2 tasks" in out
    code = main(["train", "--labels", str(csv), "--task-weights", "shape=2", "--backbone", TINY,
                 "--out", str(tmp_path / "bad")])  # fmt: skip
    assert code != 0 and "--task-weights names shape" in capsys.readouterr().err


def test_runs_on_different_tasks_of_one_csv_share_the_split(tmp_path: Path) -> None:
    csv = make_table(tmp_path, n=40)
    both = load_table_split(csv, tasks=["colour", "size"], seed=3)
    one = load_table_split(csv, tasks=["colour"], seed=3)
    assert [s.path for s in both.val] == [s.path for s in one.val]


def test_monitor_must_be_mean_or_a_task(tmp_path: Path) -> None:
    from headstart.errors import ConfigError

    with pytest.raises(ConfigError, match="--monitor 'shape'; expected mean or one of"):
        _train(make_table(tmp_path), tmp_path / "run", **{"optim.monitor": "shape"})
    m = _train(make_table(tmp_path), tmp_path / "run", **{"optim.monitor": "size"})
    assert m["monitor"] == "size"
    assert m["metrics"]["val_acc"] == m["metrics"]["val_acc_per_task"]["size"]
