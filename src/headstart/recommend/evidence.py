"""Evidence per candidate backbone, from its frozen features (computed once, then cached):
LogME, leave-one-out k-NN, a cached probe's cross-validated and validation accuracy, and
the backbone's measured forward throughput on this machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from headstart.backbones import Backbone, count_parameters
from headstart.config import TrainConfig
from headstart.data import task_labels
from headstart.model import Classifier
from headstart.recommend.transferability import knn_loo_accuracy, logme
from headstart.stats import wilson_interval
from headstart.training.device import images_to, to_device
from headstart.training.fold import folded_batchnorm
from headstart.training.inputs import frozen_inputs
from headstart.training.lbfgs import HeadsCopy, accuracy, target_tensors
from headstart.training.objective import Objective
from headstart.training.regularise import fit_last_layer_head

if TYPE_CHECKING:
    from headstart.training.setup import Ready

TRAIN_STEP_COST = 3.0  # a training step costs about 3 forward passes (forward + backward)
CURVE_FRACTIONS = (0.25, 0.5, 1.0)


@dataclass(frozen=True)
class BackboneEvidence:
    """What the frozen features of one backbone say about this data."""

    backbone: str
    params: int
    input_size: int
    logme: float
    knn_acc: float
    cv_acc: float  # the cached probe's cross-validated accuracy on the training images
    cv_folds: int
    val_acc: float  # the same probe, fitted on every training image, on the validation split
    val_ci: tuple[float, float]
    n_train: int
    n_val: int
    images_per_s: float  # forward passes per second at the batch size, measured here
    seconds: float  # what gathering this evidence cost
    curve: tuple[tuple[int, float], ...] = ()  # (training images, probe val accuracy)

    @property
    def curve_gain(self) -> float:
        """The probe's val accuracy gained from half the training images to all of them."""
        return self.curve[-1][1] - self.curve[-2][1] if len(self.curve) > 1 else 0.0

    def finetune_epoch_seconds(self) -> float:
        """Estimated seconds per fine-tuning epoch (``TRAIN_STEP_COST`` forwards per image)."""
        return self.n_train * TRAIN_STEP_COST / self.images_per_s

    def probe_seconds(self) -> float:
        """Estimated seconds for a cold probe: one forward pass over every image."""
        return (self.n_train + self.n_val) / self.images_per_s

    def to_dict(self) -> dict:
        """For ``recommend.json``."""
        return {
            **asdict(self),
            "val_ci": list(self.val_ci),
            "curve": [list(point) for point in self.curve],
            "finetune_epoch_seconds": self.finetune_epoch_seconds(),
            "probe_seconds": self.probe_seconds(),
        }


def first_task_labels(targets: list) -> np.ndarray:
    """Integer labels of the first task (what the learning curve's subsets stratify by)."""
    return next(iter(task_labels(targets).values()))


def mean_over_tasks(
    score: Callable[..., float],
    features: np.ndarray,
    targets: list,
    groups: list[int] | None = None,
) -> float:
    """``score(features, labels)`` of each task on its labelled images, averaged over the
    tasks: the multi-task model is judged by its mean task accuracy, so are its features.
    ``groups`` (``--group``) are passed on to ``score`` as ``groups=``."""
    g = None if groups is None else np.asarray(groups)
    values = []
    for y in task_labels(targets).values():
        m = y >= 0
        values.append(score(features[m], y[m], **({} if g is None else {"groups": g[m]})))
    return float(np.mean(values))


def learning_curve(
    model: torch.nn.Module,
    raw: torch.Tensor,
    targets: list,
    val_x: torch.Tensor,
    y_val: dict[str, torch.Tensor],
    objective: Objective,
    seed: int,
    fractions: tuple[float, ...] = CURVE_FRACTIONS,
    groups: list[int] | None = None,
) -> tuple[tuple[int, float], ...]:
    """The cached probe's val accuracy trained on stratified ``fractions`` of the training
    images (penalty by CV each time, on folds of whole ``groups`` when given): still
    climbing at 100% means more capacity or data will pay; flat means the frozen features
    say all this data can tell."""
    from sklearn.model_selection import train_test_split

    labels = first_task_labels(targets)
    classes = len(set(labels))
    points = []
    for fraction in fractions:
        idx = np.arange(len(labels))
        if fraction < 1.0 and fraction * len(labels) < 2 * classes:
            continue  # under two images a class: nothing to cross-validate the penalty on
        if fraction < 1.0:
            idx, _ = train_test_split(idx, train_size=fraction, random_state=seed,
                                      stratify=labels)  # fmt: skip
        m = HeadsCopy(model)
        rows = torch.as_tensor(np.sort(idx))
        kept = rows.tolist()
        fit_last_layer_head(m, raw[rows], [targets[i] for i in kept], objective, seed,
                            None if groups is None else [groups[i] for i in kept])  # fmt: skip
        points.append((len(idx), accuracy(m, val_x, y_val, objective)))
    return tuple(points)


def throughput(
    backbones: dict[str, Backbone],
    batch: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager],
    rounds: int = 3,
) -> dict[str, float]:
    """Forward images per second of each backbone at its input size, in eval mode and the
    run's precision: one warm-up batch each, then ``rounds`` rounds that time every backbone
    in turn, best of the rounds. Interleaved, because the machine is shared: timed one after
    the other, a busy minute would make one candidate look slow."""
    inputs = {}
    for name, b in backbones.items():
        size = b.preprocessing.input_size
        inputs[name] = images_to(torch.randn(batch, 3, size, size), device)
        to_device(b.module, device).eval()
    best = dict.fromkeys(backbones, float("inf"))
    with ExitStack() as folded, torch.inference_mode(), autocast():
        for b in backbones.values():  # as the feature passes run them
            folded.enter_context(folded_batchnorm(b.module))
        for name, b in backbones.items():
            b.module(inputs[name])
        for _ in range(rounds):
            for name, b in backbones.items():
                start = time.perf_counter()
                b.module(inputs[name])
                if device.type == "cuda":
                    torch.cuda.synchronize()
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: batch / seconds for name, seconds in best.items()}


def backbone_evidence(cfg: TrainConfig, ready: Ready, progress: bool = True) -> BackboneEvidence:
    """Evidence for ``ready``'s backbone (as ``training.setup.build_backbone`` builds it) on
    its split, features from the cache when there; its throughput is :func:`throughput`'s
    to fill in."""
    start = time.perf_counter()
    backbone, split, device, objective = ready.backbone, ready.split, ready.device, ready.objective
    name = backbone.spec.name
    cfg = replace(cfg, model=replace(cfg.model, backbone=name))
    inputs = frozen_inputs(cfg, backbone, split, device, ready.generator, ready.cache, progress)
    train, val = inputs.train.dataset, inputs.val.dataset
    raw = train.features[:, 0]  # type: ignore[attr-defined]
    targets = list(train.targets)  # type: ignore[attr-defined]
    features = raw.numpy()
    model = Classifier(
        backbone.module, backbone.num_features,
        {task: len(classes) for task, classes in split.tasks.items()}, 0.0, backbone.spec.family,
    )  # fmt: skip
    to_device(model, device)
    y_val = {t: v.to(device) for t, v in target_tensors(val.targets).items()}  # type: ignore[attr-defined]
    val_x = val.features[:, 0].to(device)  # type: ignore[attr-defined]
    groups = split.group_codes()  # --group: every fold below keeps a group on one side
    curve = learning_curve(model, raw.to(device), targets, val_x, y_val, objective,  # type: ignore[attr-defined]
                           cfg.seed, CURVE_FRACTIONS[:-1], groups)  # fmt: skip
    choice, _, _ = fit_last_layer_head(model, raw.to(device), train.targets, objective, cfg.seed,  # type: ignore[attr-defined]
                                       groups)  # fmt: skip
    val_acc = accuracy(model, val_x, y_val, objective)
    n_val = len(val)  # type: ignore[arg-type]
    size = backbone.preprocessing.input_size
    return BackboneEvidence(
        backbone=name,
        params=count_parameters(backbone.module),
        input_size=size,
        logme=mean_over_tasks(logme, features, targets),
        knn_acc=mean_over_tasks(knn_loo_accuracy, features, targets, groups),
        cv_acc=max(choice.scores.values()),
        cv_folds=choice.folds,
        val_acc=val_acc,
        val_ci=wilson_interval(round(val_acc * n_val), n_val),
        n_train=len(targets),
        n_val=n_val,
        images_per_s=0.0,
        seconds=time.perf_counter() - start,
        curve=(*curve, (len(targets), val_acc)),
    )
