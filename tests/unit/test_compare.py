"""The comparison verdict: winner, noise floor, and the fine-tuning-below-probe diagnosis."""

from __future__ import annotations

from headstart.evaluation.compare import CompareRow, verdict


def row(name: str, best: float, final: float) -> CompareRow:
    return CompareRow(name, 10, best, 3, final, 0.99, 1.0, 10.0, "runs/x")


def test_winner_and_margin_in_images() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("scratch", 0.70, 0.66)], n_val=150)
    assert lines[0].startswith("winner: probe") and "39 of 150 images" in lines[0]
    assert len(lines) == 1


def test_small_lead_is_called_noise() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("finetune", 0.953, 0.953)], n_val=150)
    assert "within noise" in lines[1]


def test_finetune_below_probe_names_cause_and_fix() -> None:
    lines = verdict([row("probe", 0.96, 0.96), row("finetune", 0.95, 0.90)], n_val=150)
    warning = next(line for line in lines if line.startswith("finetune ended below the probe"))
    assert "catastrophic forgetting" in warning and "--lr" in warning
