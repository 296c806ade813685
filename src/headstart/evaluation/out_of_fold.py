"""Out-of-fold probabilities of a probe's training images, for finding label errors.

Confident learning (Northcutt et al., JAIR 2021) ranks a training image as a likely label
error when a model that never saw it disagrees with its label. A probe's head is solved to
convergence, so on its own training images it agrees with nearly every label (ants/bees:
training accuracy 100%) and in-sample probabilities flag nothing. Its head is cheap to
refit, though: on the training images' features, each of k folds is scored by the head
fitted on the others, at the run's own penalty.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from headstart.data.groups import group_codes
from headstart.data.scan import Sample
from headstart.model import head_key
from headstart.training.checkpoint import LoadedRun
from headstart.training.inputs import MULTI
from headstart.training.lbfgs import HeadsCopy, fit_heads, head_logits
from headstart.training.objective import Objective
from headstart.training.regularise import largest_class

FOLDS = 3


@contextmanager
def heads_input(model: nn.Module) -> Iterator[Callable[[], torch.Tensor]]:
    """Within the block, every forward pass of ``model`` records its heads' input (the
    features); the yielded function returns all recorded so far, in order."""
    seen: list[torch.Tensor] = []
    linear = model.heads[head_key(model.tasks[0])][-1]  # type: ignore[index]
    hook = linear.register_forward_pre_hook(lambda _, args: seen.append(args[0].float().cpu()))
    try:
        yield lambda: torch.cat(seen) if seen else torch.zeros(0)
    finally:
        hook.remove()


def cached_head_inputs(run: LoadedRun, samples: Sequence[Sample]) -> torch.Tensor | None:
    """The heads' input for ``samples`` from the feature cache the probe trained on (the
    clean view, standardised as the model does for a multi-layer probe); None when the run
    did not record them or any entry is gone (the caller then runs the model). On the CPU,
    wherever the model is."""
    from headstart.cache import Cache
    from headstart.errors import ConfigError

    inputs = run.manifest.get("inputs") or {}
    where = inputs.get("features")
    if not where or inputs.get("boundary") not in ("pooled", MULTI):  # a probe's, not maps
        return None
    try:
        cache = Cache(where["cache"])
    except ConfigError:
        return None
    store = cache.store("features", where["key"])
    rows = []
    for sample in samples:
        try:
            row = store.get(cache.digest(sample.path))
        except OSError:
            return None
        if row is None:
            return None
        rows.append(torch.from_numpy(np.asarray(row, dtype=np.float32)))
    x = torch.stack(rows) if rows else torch.zeros(0)
    if run.model.layers != "all":
        return x
    taps = run.model.taps  # on the device the run's predictor moved the model to (a GPU's)
    with torch.no_grad():
        return taps.normalize(x.to(taps.mean.device)).cpu()  # on the CPU, as heads_input's


def out_of_fold_probabilities(
    model: nn.Module,
    features: torch.Tensor,
    targets: dict[str, np.ndarray],
    l2: float,
    objective: Objective | None = None,
    seed: int = 0,
    folds: int = FOLDS,
    groups: Sequence[str] | None = None,
) -> dict[str, np.ndarray] | None:
    """Per task, each training image's probabilities from ``model``'s heads refitted (L2
    ``l2``, by L-BFGS, minimising ``objective``: the run's own, class weights included) on
    the other folds; None when no class has two images. A class rarer than the folds sits
    out of some (its images then meet a head that never saw it). ``targets``: per task,
    class indices (``MISSING`` where blank). ``groups`` (``--group``): each image's
    subject; a subject's images share a fold, so none is scored by a head that saw its twin."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    objective = objective or Objective()
    y = {t: torch.from_numpy(np.asarray(v)).long() for t, v in targets.items()}
    first = np.asarray(next(iter(targets.values())))
    codes = None if groups is None else group_codes(groups)
    folds = min(folds, largest_class(first, codes))  # as the penalty's CV counts them
    if folds < 2:
        return None
    out = {t: np.zeros((len(first), model.heads[head_key(t)][-1].out_features)) for t in y}  # type: ignore[index]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        if groups is None:
            splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        else:
            splitter = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
        splits = list(splitter.split(first, first, groups))  # a generator: warns here
    for train, held in splits:
        m = HeadsCopy(model).to(features.device)  # the run's heads may be on a GPU
        tr, he = torch.as_tensor(train), torch.as_tensor(held)
        fit_heads(m, features[tr], {t: v[tr] for t, v in y.items()}, objective, l2)
        with torch.no_grad():
            for t, logits in head_logits(m, features[he]).items():
                out[t][held] = torch.softmax(logits.float(), 1).numpy()
    return out
