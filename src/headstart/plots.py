"""PNG plots written beside the numbers: training curves (a solved probe's penalty path)
and confusion matrices.

matplotlib is imported inside each function (with the non-interactive Agg backend), so
importing headstart stays fast and works without a display.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(
    history: Sequence[dict[str, float]],
    path: Path,
    best_epoch: int,
    title: str = "",
    kept: str = "best",
) -> Path:
    """Loss (train/val) and accuracy (train/val) per epoch, side by side; the restored
    ``best_epoch`` (1-based; the ``kept`` one, best or last) is marked."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in ((ax_loss, "loss"), (ax_acc, "acc")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], "o-", label=f"train {key}")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], "o-", label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy" if key == "acc" else "loss")
        ax.grid(alpha=0.3)
        ax.legend()
    best = history[best_epoch - 1]
    ax_acc.axvline(best["epoch"], color="grey", ls="--", lw=1)
    ax_acc.set_title(f"{kept} val acc {best['val_acc']:.3f} at epoch {best['epoch']}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_penalty_path(
    scores: dict[tuple[int, float], float],
    losses: dict[tuple[int, float], float],
    chosen: tuple[int, float],
    path: Path,
    folds: int,
    val_acc: float,
    title: str = "",
) -> Path:
    """A solved probe's ``curves.png``: cross-validated accuracy (and log-loss, when it chose)
    against the L2 penalty, one line per number of stages read, the ``chosen`` (stages,
    penalty) marked. A probe has no epochs; this curve is what its training decided."""
    plt = _pyplot()
    from matplotlib.ticker import NullLocator

    panels = 2 if losses else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), squeeze=False)
    series = [("accuracy", scores)] + ([("log-loss", losses)] if losses else [])
    for ax, (name, values) in zip(axes[0], series):
        for k in sorted({k for k, _ in values}):
            l2s = sorted(l2 for kk, l2 in values if kk == k)
            label = None if len({k for k, _ in values}) == 1 else f"last {k} stage(s)"
            ax.plot(l2s, [values[k, l2] for l2 in l2s], "o-", label=label)
        ax.plot([chosen[1]], [values[chosen]], "o", ms=12, mfc="none", mec="black")
        ax.axvline(chosen[1], color="grey", ls="--", lw=1)
        ax.set_xscale("log")
        # ticks at the penalties tried, no log minor ticks: easier to read, and those ticks
        # were a third of the plot's time (80 ms of 225), which a warm probe waits for
        tried = sorted({l2 for _, l2 in values})
        ax.set_xticks(tried, [f"{l2:g}" for l2 in tried])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel("L2 penalty (stronger to the right)")
        ax.set_ylabel(f"{folds}-fold CV {name}")
        ax.grid(alpha=0.3)
        if len({k for k, _ in values}) > 1:
            ax.legend()
    stages = f"last {chosen[0]} stage(s), " if len({k for k, _ in scores}) > 1 else ""
    axes[0][0].set_title(f"chosen: {stages}L2 {chosen[1]:g}; val acc {val_acc:.3f}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion_matrix(
    matrix: Any,
    classes: Sequence[str],
    path: Path,
    title: str = "",
    shown: Sequence[int] | None = None,
) -> Path:
    """Counts in each cell, colour by row-normalised rate (recall), true labels on rows;
    ``shown``: the indices of the classes drawn (rates still over each whole row)."""
    import numpy as np

    plt = _pyplot()
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    if shown is not None and len(shown) < len(classes):
        title += f"\nthe {len(shown)} classes in the most errors, of {len(classes)}"
        counts, rates = (m[np.ix_(shown, shown)] for m in (counts, rates))
        classes = [classes[i] for i in shown]
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if counts[i, j] == 0 and len(classes) > 10:
                continue  # many classes: the empty cells left blank, the errors stand out
            colour = "white" if rates[i, j] > 0.5 else "black"
            ax.text(
                j, i, f"{counts[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", color=colour
            )
    wrapped = "\n".join(textwrap.fill(line, 48) for line in title.splitlines())
    ax.set_title(wrapped, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_comparison(val_acc: dict[str, Sequence[float]], path: Path) -> Path:
    """Validation accuracy per epoch, one line per strategy."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, accs in val_acc.items():
        ax.plot(range(1, len(accs) + 1), accs, "o-", label=f"{name} (best {max(accs):.3f})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("strategy comparison")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_reliability(calibration: Any, path: Path, title: str = "") -> Path:
    """Reliability diagram: accuracy against mean confidence per confidence bin (a
    calibrated model sits on the diagonal), with the share of images per bin below."""
    import numpy as np

    plt = _pyplot()
    c = calibration
    centres = (c.edges[:-1] + c.edges[1:]) / 2
    width = c.edges[1] - c.edges[0]
    filled = c.counts > 0
    fig, (ax, ax_n) = plt.subplots(
        2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.bar(centres[filled], c.accuracy[filled], width=width, edgecolor="black", label="accuracy")
    low = np.minimum(c.confidence[filled], c.accuracy[filled])
    gap = np.abs(c.confidence[filled] - c.accuracy[filled])
    ax.bar(
        centres[filled], gap, bottom=low, width=width, color="tab:red", alpha=0.3,
        edgecolor="tab:red", hatch="//", label="gap to mean confidence",
    )  # fmt: skip
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{title}\nECE {c.ece:.3f} ({len(c.counts)} bins)".strip(), fontsize=9)
    ax_n.bar(centres, c.counts / max(int(np.sum(c.counts)), 1), width=width, color="grey")
    ax_n.set_xlabel("confidence (top-1 probability)")
    ax_n.set_ylabel("share")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_roc(roc: Any, path: Path, title: str = "") -> Path:
    """ROC curves (true against false positive rate): the positive class's for two classes,
    each class against the rest for more, with the AUC in the legend."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in roc.shown:
        fpr, tpr = roc.curves[c]
        lo, hi = roc.ci[c]
        ax.plot(fpr, tpr, lw=1.5, label=f"{c}: AUC {roc.auc[c]:.3f} [{lo:.3f}, {hi:.3f}]")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.legend(loc="lower right", fontsize=8)
    if len(roc.shown) < len(roc.auc):
        title += f"\nthe {len(roc.shown)} classes of lowest AUC, of {len(roc.auc)}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_image_grid(
    images: Sequence[Any], captions: Sequence[str], path: Path, title: str = "", columns: int = 4
) -> Path:
    """Images (PIL) in a grid, each with its caption; used for the top-losses grid."""
    plt = _pyplot()
    n = max(len(images), 1)
    cols = min(columns, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.6 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image)
        ax.set_title(caption, fontsize=8)
    if not images:
        axes.flat[0].text(0.5, 0.5, "no errors", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_lr_find(test: Any, path: Path, title: str = "") -> Path:
    """The range test: loss (raw and smoothed) against the base LR on a log axis, with the
    default, the onset of divergence and the pick marked and the rule under the title."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(test.lrs, test.losses, color="lightgrey", lw=1, label="loss per step")
    ax.plot(test.lrs, test.smoothed, color="C0", lw=2, label="smoothed")
    marks = [
        (test.default, ":", "default"),
        (test.onset, "--", "diverges"),
        (test.pick, "-", "pick"),
    ]
    for lr, style, name in marks:
        if lr is None:
            continue
        ax.axvline(lr, color="C3" if name == "pick" else "grey", ls=style, lw=1.5,
                   label=f"{name} {lr:.2g}")  # fmt: skip
    ax.set_xscale("log")
    top = max(test.smoothed[: max(1, test.smoothed.index(min(test.smoothed)) + 1)]) * 1.5
    ax.set_ylim(min(test.smoothed) * 0.8, max(top, min(test.smoothed) * 1.2))
    ax.set_xlabel("base learning rate (every group at its multiplier)")
    ax.set_ylabel("training loss")
    ax.set_title(f"{title}\npick: {test.rule}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_recommendation(points: list[tuple[str, float, float, float, bool]], path: Path) -> Path:
    """``recommend``: each candidate's held-out probe accuracy (with one standard error)
    against its estimated seconds per fine-tuning epoch; the pick in red."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, seconds, acc, se, picked in points:
        color = "C3" if picked else "C0"
        ax.errorbar(seconds, acc, yerr=se, fmt="o", color=color, capsize=4)
        ax.annotate(name + (" (pick)" if picked else ""), (seconds, acc), xytext=(6, 6),
                    textcoords="offset points", fontsize=8, color=color)  # fmt: skip
    ax.set_xlabel("estimated seconds per fine-tuning epoch on this machine")
    ax.set_ylabel("cached probe, held-out accuracy (± 1 SE)")
    ax.set_title("backbones: accuracy of the frozen features against cost", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_benchmark(rows: Sequence[Any], runs: list[tuple[str, float, float]], path: Path) -> Path:
    """``benchmark``: batch-1 p50 latency of each backbone per runtime and precision
    (against its GFLOPs); beside it, when runs were given, their accuracy against the
    latency of their backbone."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if runs else 1, figsize=(12 if runs else 7, 4.5))
    ax = axes[0] if runs else axes
    smallest = min(r.batch for r in rows)
    kinds = sorted({(r.runtime, r.precision) for r in rows})
    for i, (runtime, precision) in enumerate(kinds):
        pts = [r for r in rows if (r.runtime, r.precision) == (runtime, precision)
               and r.batch == smallest]  # fmt: skip
        ax.scatter([r.gflops for r in pts], [r.p50_ms for r in pts], color=f"C{i}",
                   label=f"{runtime} {precision}")  # fmt: skip
        for r in pts:
            ax.annotate(r.backbone, (r.gflops, r.p50_ms), xytext=(4, 4),
                        textcoords="offset points", fontsize=7, color=f"C{i}")  # fmt: skip
    ax.set_xlabel("GFLOPs per image")
    ax.set_ylabel(f"p50 latency, batch {smallest} (ms)")
    ax.set_title("latency on this machine", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if runs:
        ax2 = axes[1]
        for name, latency, acc in runs:
            ax2.scatter(latency, acc, color="C3")
            ax2.annotate(Path(name).name, (latency, acc), xytext=(4, 4),
                         textcoords="offset points", fontsize=7)  # fmt: skip
        ax2.set_xlabel(f"p50 latency of its backbone in fp32, batch {smallest} (ms)")
        ax2.set_ylabel("validation accuracy")
        ax2.set_title("runs: accuracy against latency", fontsize=10)
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
