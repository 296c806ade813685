"""What it means when a strategy that trains the backbone ends below the probe."""

from __future__ import annotations


def below_probe(name: str, acc: float, probe: float, n_val: int, lr: float) -> list[str]:
    """Lines saying that ``name`` ended below the probe on the same split (accuracies in
    0-1, ``n_val`` validation images, ``lr`` its backbone LR), with the likely cause and
    the fix; no lines when it did not.

    >>> below_probe("finetune", 0.90, 0.91, 200, 1e-4)[0]
    'finetune ended below the probe (90.00% vs 91.00%, 2 of 200 images).'
    """
    if acc >= probe:
        return []
    images = round((probe - acc) * n_val)
    lines = [
        f"{name} ended below the probe ({acc:.2%} vs {probe:.2%}, {images} of {n_val} images)."
    ]
    cause = (
        f"the backbone learning rate ({lr:g}) is too high for this backbone and data, so "
        "fine-tuning erodes the pretrained features (catastrophic forgetting). Fix: lower "
        f"--lr (e.g. --lr {lr / 10:g}), keep BatchNorm statistics (--bn eval), or use "
        "lp-ft (probe first, then fine-tune)."
    )
    if images <= 2:
        lines.append(
            "  That is within noise, so prefer the cheaper probe here. A larger gap would "
            f"mean {cause}"
        )
    else:
        lines.append(f"  Likely cause: {cause}")
    return lines
