"""The comparison verdict: winner, noise floor, and the fine-tuning-below-probe diagnosis."""

from __future__ import annotations

from headstart.evaluation.compare import CompareRow, verdict


def row(name: str, best: float, final: float) -> CompareRow:
    return CompareRow(name, [10], best, 3, final, 0.99, 1.0, 10.0, "runs/x", lr=1e-4)


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
