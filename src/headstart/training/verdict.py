"""What it means when a strategy that trains the backbone ends below the probe."""

from __future__ import annotations


def below_probe(
    name: str,
    acc: float,
    probe: float,
    n_val: int,
    lr: float,
    train_acc: float | None = None,
    start_train_acc: float | None = None,
    mixed: bool = False,
    n_train: int | None = None,
) -> list[str]:
    """Lines saying that ``name`` ended below the probe on the same split (accuracies in
    0-1, ``n_val`` validation images, ``lr`` its backbone LR), with the likely cause and
    the fix; no lines when it did not.

    The cause is read from the training accuracies when they are given: a run that fits its
    training images no better than the head it started from (``start_train_acc``: the warm
    head, fitted on the frozen features) has not adapted (the LR is too low, or the epochs
    too few); one that fits them better but generalises worse has eroded the pretrained
    features (the LR is too high). The probe's own training accuracy is no yardstick: solved
    under a weak penalty it fits a few hundred images to 100%. Training accuracies within two
    of the ``n_train`` images of each other tell neither (the run's is measured in training
    mode, on augmented images where it uses them): then no direction is named, and lr-find
    is the way to tell. A validation gap of two images or fewer is within noise: it is said
    so, with what a larger gap would mean.
    A run that trained on blends (``mixed``: ``--mixup``/``--cutmix``) has no comparable
    training accuracy, and the blending itself is the first suspect.

    >>> below_probe("finetune", 0.90, 0.91, 200, 1e-4)[0]
    'finetune ended below the probe (90.00% vs 91.00%, 2 of 200 images).'
    """
    if acc >= probe:
        return []
    images = round((probe - acc) * n_val)
    lines = [
        f"{name} ended below the probe ({acc:.2%} vs {probe:.2%}, {images} of {n_val} images)."
    ]
    read = train_acc is not None and start_train_acc is not None
    apart = (
        round(abs(train_acc - start_train_acc) * n_train)  # type: ignore[operator]
        if read and n_train
        else None
    )
    unread = not mixed and apart is not None and apart <= 2
    if mixed:
        cause = (
            "it trained on blended images (--mixup/--cutmix), and the blending itself may "
            "cost accuracy here (CutMix can cut out a small defect; the training accuracy of "
            "blends says nothing about the learning rate). Fix: run it again without them."
        )
    elif unread:
        cause = (
            f"not clear from the training accuracies: the run's ({train_acc:.2%}) and its "
            f"warm head's on the frozen features ({start_train_acc:.2%}) are {apart} of "
            f"{n_train} images apart, which says neither that the backbone learning rate "
            f"({lr:g}) is too low nor that it is too high. `headstart lr-find` measures the "
            "range on this data."
        )
    elif read and train_acc < start_train_acc:  # type: ignore[operator]
        cause = (
            f"it has not adapted: its training accuracy ({train_acc:.2%}) is below its warm "
            f"head's on the frozen features ({start_train_acc:.2%}), so the backbone learning "
            f"rate ({lr:g}) is too low for this data or the epochs too few. Fix: raise --lr "
            f"(e.g. --lr {lr * 10:g}; `headstart lr-find` shows the range), or train longer."
        )
    else:
        cause = (
            f"the backbone learning rate ({lr:g}) is too high for this backbone and data, so "
            "fine-tuning erodes the pretrained features (catastrophic forgetting). Fix: lower "
            f"--lr (e.g. --lr {lr / 10:g}), keep BatchNorm statistics (--bn eval), or use "
            "lp-ft (probe first, then fine-tune)."
        )
    if images <= 2:  # no cause is named for a gap within noise
        larger = "" if unread else f" A larger gap would mean {cause}"
        lines.append("  That is within noise, so prefer the cheaper probe here." + larger)
    else:
        lines.append(f"  Likely cause: {cause}")
    return lines
