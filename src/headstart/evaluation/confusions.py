"""Reading the evaluation of many classes (Flowers-102, CUB-200, a product catalogue): the
pairs confused most, the classes in the most errors, the per-class report's weakest rows.

A 100-class confusion matrix printed whole is 100 columns wide, and drawn whole with a
number in every cell it takes matplotlib minutes and a poster-sized PNG. Past
:data:`MANY_CLASSES` the terminal shows the :data:`SHOWN` classes of lowest recall and the
:data:`SHOWN` largest confusions (fastai's ``most_confused``), and the PNG the
:data:`PLOTTED` classes in the most errors; ``evaluation.json`` keeps everything whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from headstart.evaluation.roc import SHOWN  # rows of each condensed list, as ROC AUC's

MANY_CLASSES = 20  # more than this: the terminal condenses the report and the matrix
PLOTTED = 30  # classes in the confusion matrix PNG at most


def most_confused(
    confusion: np.ndarray, classes: Sequence[str], k: int = SHOWN
) -> list[tuple[str, str, int, float]]:
    """The ``k`` largest off-diagonal cells as (true, predicted, count, share of the true
    class's images), largest first (ties in class order); empty cells are left out.

    >>> most_confused(np.array([[5, 3, 0], [1, 4, 0], [0, 2, 2]]), ["a", "b", "c"])
    [('a', 'b', 3, 0.375), ('c', 'b', 2, 0.5), ('b', 'a', 1, 0.2)]
    """
    cm = np.asarray(confusion)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    rows = cm.sum(axis=1)
    out = []
    for flat in order:
        i, j = divmod(int(flat), cm.shape[1])
        if off[i, j] > 0:
            out.append((classes[i], classes[j], int(off[i, j]), float(off[i, j] / rows[i])))
    return out


def confused_classes(confusion: np.ndarray, k: int = PLOTTED) -> list[int]:
    """The indices of the ``k`` classes in the most errors, as the true or the predicted
    class, in their own order (all of them when there are no more than ``k``).

    >>> confused_classes(np.array([[5, 3, 0], [1, 4, 0], [0, 2, 2]]), 2)
    [0, 1]
    """
    cm = np.asarray(confusion)
    if len(cm) <= k:
        return list(range(len(cm)))
    off = cm - np.diag(np.diag(cm))
    errors = off.sum(axis=0) + off.sum(axis=1)
    return sorted(np.argsort(-errors, kind="stable")[:k].tolist())


def weakest_report(report_text: str, report: dict[str, Any], classes: Sequence[str]) -> str:
    """scikit-learn's text report with only the :data:`SHOWN` classes of lowest recall (F1
    breaking ties; classes without images last), in that order, above its accuracy and
    averages over every class."""
    lines = report_text.splitlines()
    rows = dict(zip(classes, lines[2 : 2 + len(classes)]))  # header, blank, one per class
    weakest = sorted(
        classes,
        key=lambda c: (report[c]["support"] == 0, report[c]["recall"], report[c]["f1-score"]),
    )
    title = f"the {SHOWN} classes of lowest recall, of {len(classes)} (all in evaluation.json):"
    return "\n".join(
        [title, *lines[:2], *(rows[c] for c in weakest[:SHOWN]), *lines[2 + len(classes) :]]
    )


def confused_text(confusion: np.ndarray, classes: Sequence[str]) -> str:
    """The :func:`most_confused` pairs as the terminal shows them."""
    pairs = most_confused(confusion, classes)
    lines = [
        f"most confused of {len(classes)} classes (true -> predicted: images, share of the "
        "true class's):"
    ]
    lines += [f"  {t} -> {p}: {n} ({share:.0%})" for t, p, n, share in pairs] or ["  none"]
    return "\n".join(lines)
