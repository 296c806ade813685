"""Likely label errors from cross-validation, for any strategy.

``evaluate`` finds a probe's likely label errors out of fold by refitting its head
(``evaluation.out_of_fold``); a fine-tuned run's training images shaped its backbone too, so
what it says about them is in-sample: it can only list the images that resisted being
learnt. ``headstart cv`` trains a model for every fold without that fold's images: each
image's probabilities from the model that never saw it are the out-of-fold probabilities
that confident learning (Northcutt et al., JAIR 2021) asks for, at the cost of one pass
over each fold's held-out images (from the feature cache where the fold's run is a probe).
With ``--repeats R``, an image's probabilities are averaged over its R held-out scorings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from headstart.data import MISSING
from headstart.data.scan import Sample
from headstart.data.table import task_labels
from headstart.evaluation.analysis import Suspect, likely_label_errors
from headstart.evaluation.evaluate import display_path


@dataclass
class OutOfFold:
    """Per task, every held-out image's summed probabilities, its label and how many folds
    scored it; paths shown relative to ``root``."""

    root: Path | None = None
    classes: dict[str, list[str]] = field(default_factory=dict)
    sums: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add_run(self, run_dir: str | Path, device: str = "auto", progress: bool = False) -> None:
        """Score the held-out (validation) images of the fold run in ``run_dir``."""
        from headstart.evaluation.evaluate import validation_scores
        from headstart.evaluation.out_of_fold import cached_head_inputs
        from headstart.evaluation.sources import eval_samples
        from headstart.training.checkpoint import load_run
        from headstart.training.lbfgs import head_logits

        run = load_run(run_dir)
        samples, _, _ = eval_samples(run, None)
        features = cached_head_inputs(run, samples)  # a probe's: no model pass
        if features is not None:
            with torch.no_grad():
                probs = {t: torch.softmax(z.float(), 1).numpy()
                         for t, z in head_logits(run.model, features).items()}  # fmt: skip
        else:
            probs, _ = validation_scores(run, device, progress=progress)
        self.add(samples, probs, run.tasks)

    def add(
        self,
        samples: Sequence[Sample],
        probs: dict[str, np.ndarray],
        classes: dict[str, list[str]],
    ) -> None:
        """Add one fold's held-out ``samples`` and their per-task ``probs`` (rows in order)."""
        self.classes = classes
        names = [display_path(s.path, self.root) for s in samples]
        for name in names:
            self.counts[name] = self.counts.get(name, 0) + 1
        for task, labels in task_labels([s.target for s in samples]).items():
            sums, given = self.sums.setdefault(task, {}), self.labels.setdefault(task, {})
            for name, row, label in zip(names, probs[task], labels, strict=True):
                if label != MISSING:
                    sums[name] = sums[name] + row if name in sums else row.astype(np.float64)
                    given[name] = int(label)

    def label_errors(self) -> dict[str, list[Suspect]]:
        """Per task, the images whose held-out probabilities disagree with their label,
        lowest probability of the label first (``Suspect.confident``: the
        confident-learning rule flags them too)."""
        out = {}
        for task, sums in self.sums.items():
            names = sorted(sums)
            probs = np.stack([sums[n] / self.counts[n] for n in names])
            given = np.array([self.labels[task][n] for n in names])
            out[task] = likely_label_errors(names, probs, given, self.classes[task])
        return out
