"""``headstart report RUN``: one self-contained HTML page about a run, images embedded.

Sections: summary, config, data (class counts, skipped files), training curves, metrics per
epoch with confidence intervals, evaluation (per-class report, confusion matrix),
calibration, top losses, likely label errors, near-duplicates, and the strategy comparison
or cross-validation of the folder the run sits in, when there is one. The page is rendered
by Jinja2 with autoescaping on (file names and class names are data, never markup), has no
scripts and loads nothing: it opens the same offline, attached to an email or archived.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from pathlib import Path
from typing import Any

from headstart.data.table import task_label
from headstart.errors import CheckpointError
from headstart.training.checkpoint import read_json, read_manifest

SECTIONS = (
    "summary",
    "config",
    "data",
    "curves",
    "metrics",
    "evaluation",
    "calibration",
    "top-losses",
    "label-errors",
    "duplicates",
    "comparison",
    "recommendation",
)


def data_uri(path: Path) -> str | None:
    """A PNG as a data: URI, or None when the file is absent."""
    if not path.is_file():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def _counts(split: dict[str, Any]) -> dict[str, list[tuple[str, int, int]]]:
    """Images per class, per task, in the training and validation splits."""
    out = {}
    tasks = split.get("tasks") or {"class": split.get("classes", [])}  # older runs: one task
    for task, classes in tasks.items():
        per = {}
        for part in ("train", "val"):
            labels = [task_label(t, task) for _, t in split[part]]
            per[part] = Counter(labels)
        rows = [(c, per["train"][i], per["val"][i]) for i, c in enumerate(classes)]
        out[task] = [*rows, ("total", sum(r[1] for r in rows), sum(r[2] for r in rows))]
    return out


def _compare_table(folder: Path, c: dict[str, Any]) -> dict[str, Any]:
    """compare.json as a table."""
    rows = [
        [r["strategy"], f"{r['best_val_acc']:.4f}", f"{r['final_val_acc']:.4f}", r["best_epoch"],
         f"{max(r['trainable_params']):,}", f"{r['seconds_per_epoch']:.1f}"]
        for r in c["rows"]
    ]  # fmt: skip
    return {
        "title": f"headstart compare ({folder})",
        "header": ["strategy", "best val acc", "final val acc", "best epoch", "trainable",
                   "s/epoch"],
        "rows": rows,
        "verdict": c.get("verdict", []),
        "image": data_uri(folder / "compare.png"),
    }  # fmt: skip


def _cv_table(folder: Path, c: dict[str, Any]) -> dict[str, Any]:
    """cv.json as a table."""
    rows = [
        [name, f"{s['mean']:.4f}", f"{s['std']:.4f}", f"{s['ci95'][0]:.4f}-{s['ci95'][1]:.4f}",
         " ".join(f"{a:.3f}" for a in s["fold_acc"])]
        for name, s in c["strategies"].items()
    ]  # fmt: skip
    suspects = {
        name + (f", task {task}" if len(s["likely_label_errors"]) > 1 else ""): found
        for name, s in c["strategies"].items()
        for task, found in s.get("likely_label_errors", {}).items()
    }  # out of fold: each image scored by the fold's model that never saw it
    return {
        "title": f"{c['folds']}-fold cross-validation x {c['repeats']} ({folder})",
        "header": ["strategy", "mean acc", "std", "95% CI", "folds"],
        "rows": rows,
        "verdict": c.get("verdict", []),
        "image": None,
        "suspects": suspects,
    }


def _comparisons(run_dir: Path) -> list[dict[str, Any]]:
    """The compare.json / cv.json of the folder the run sits in (or its parent), as tables."""
    for folder in (run_dir.parent, run_dir.parent.parent):
        out = []
        if (folder / "compare.json").is_file():
            out.append(_compare_table(folder, read_json(folder / "compare.json")))
        if (folder / "cv.json").is_file():
            out.append(_cv_table(folder, read_json(folder / "cv.json")))
        if out:
            return out
    return []


def _metrics_line(path: Path, line: str) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise CheckpointError(
            f"CheckpointError: {path} has a line that is not a JSON object ({line[:60]!r}). "
            "Restore it from a backup, or delete the line."
        )
    return value


def write_report(
    run_dir: str | Path, out: str | Path | None = None, *, progress: bool = True
) -> Path:
    """Write the run's HTML report (default ``RUN/report.html``). Shows the run's latest
    ``evaluate``; a run never evaluated is first evaluated on its own validation split."""
    import jinja2

    from headstart.evaluation.analysis import DUPLICATE_DISTANCE
    from headstart.evaluation.evaluate import evaluate_run

    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    ev_file = run_dir / "evaluation.json"
    try:
        ev = read_json(ev_file) if ev_file.is_file() else {}
    except CheckpointError:
        ev = {}  # a damaged evaluation is made again
    if "near_duplicates" not in ev or not isinstance(ev.get("tasks"), dict):
        evaluate_run(run_dir, progress=progress)  # never evaluated, older, or damaged: again
        ev = read_json(ev_file)
    ev["n"] = sum(t.get("n", 0) for t in ev["tasks"].values()) // max(len(ev["tasks"]), 1)
    split_file = run_dir / "split.json"
    split = read_json(split_file) if split_file.is_file() else {}
    data = {**manifest.get("data", {}), "counts": _counts(split) if split else {}}
    data["skipped"] = split.get("skipped", [])
    metrics = run_dir / "metrics.jsonl"
    epochs = (
        [_metrics_line(metrics, line) for line in metrics.read_text().splitlines()]
        if metrics.is_file()
        else []
    )
    best = manifest.get("metrics", {})
    images: dict[str, Any] = {"curves": data_uri(run_dir / "curves.png")}
    for task, t in ev["tasks"].items():
        images[task] = {k: data_uri(run_dir / name) for k, name in t.get("pngs", {}).items()}
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("headstart", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,  # older manifests lack some keys
    )
    page = env.get_template("report.html.j2").render(
        name=run_dir.resolve().name,
        run_dir=str(run_dir.resolve()),
        created=manifest.get("created", ""),
        sections=SECTIONS,
        m=manifest,
        best_acc=best.get("val_acc", 0.0),
        ci=best.get("val_acc_ci"),  # none for a multi-task mean: see each task's
        ci_method=best.get("val_acc_ci_method"),
        val_n=best.get("val_n"),
        config=(run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else "",
        data=data,
        epochs=epochs,
        ev=ev,
        images=images,
        dup_distance=DUPLICATE_DISTANCE,
        comparison=_comparisons(run_dir),
    )
    path = Path(out) if out else run_dir / "report.html"
    path.write_text(page, encoding="utf-8", errors="backslashreplace")  # odd file names
    return path
