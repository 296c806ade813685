"""The comparison verdict: winner, noise floor, and the fine-tuning-below-probe diagnosis."""

from __future__ import annotations

from headstart.evaluation.compare import CompareRow, verdict


def row(
    name: str, best: float, final: float, train: float = 0.99, start: float | None = None
) -> CompareRow:
    return CompareRow(name, [10], best, 3, final, train, 1.0, 10.0, "runs/x", 1e-4, start)


def test_winner_and_margin_in_images() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("scratch", 0.70, 0.66)], n_val=150)
    assert lines[0].startswith("winner: probe") and "39 of 150 images" in lines[0]
    assert len(lines) == 1


def test_small_lead_is_called_noise() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("finetune", 0.953, 0.953)], n_val=150)
    assert "within noise" in lines[1]


def test_finetune_below_probe_names_cause_and_fix() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("finetune", 0.95, 0.90)], n_val=150)
    i = next(i for i, line in enumerate(lines) if line.startswith("finetune ended below the probe"))
    assert "9 of 150 images" in lines[i]
    assert "catastrophic forgetting" in lines[i + 1] and "--lr 1e-05" in lines[i + 1]
    assert "(0.0001)" in lines[i + 1]


def test_finetune_one_image_below_probe_is_noise_not_forgetting() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("finetune", 0.955, 0.9534)], n_val=150)
    text = "\n".join(lines)
    assert "ended below the probe" in text and "within noise" in text
    assert "Likely cause" not in text and "catastrophic forgetting" in text


def test_a_run_on_blends_is_not_diagnosed_from_its_training_accuracy() -> None:
    rows = [row("probe", 0.96, 0.96), row("finetune", 0.95, 0.90)]
    lines = verdict(rows, n_val=150, mixed=True)
    i = next(i for i, line in enumerate(lines) if line.startswith("finetune ended below the probe"))
    assert "blended images" in lines[i + 1] and "without them" in lines[i + 1]
    assert "catastrophic forgetting" not in lines[i + 1] and "--lr" not in lines[i + 1]


def test_not_adapted_is_read_against_the_runs_warm_head_not_the_solved_probe() -> None:
    # the solved probe fits its training images to 100%: no fine-tune's (augmented) training
    # accuracy reaches that, so it would always read "not adapted"; the warm head's decides
    probe = row("probe", 0.96, 0.96, train=1.0)
    lines = verdict([probe, row("finetune", 0.90, 0.90, train=0.97, start=0.95)], n_val=150)
    assert "catastrophic forgetting" in lines[-1] and "not adapted" not in lines[-1]
    lines = verdict([probe, row("finetune", 0.90, 0.90, train=0.93, start=0.95)], n_val=150)
    assert "has not adapted" in lines[-1] and "(95.00%)" in lines[-1]
