"""Evaluation: accuracy, per-class report and confusion matrix; strategy comparison."""

from headstart.evaluation.compare import CompareRow, Comparison, compare_strategies
from headstart.evaluation.evaluate import Evaluation, evaluate_run
from headstart.evaluation.sources import eval_samples

__all__ = [
    "CompareRow",
    "Comparison",
    "Evaluation",
    "compare_strategies",
    "eval_samples",
    "evaluate_run",
]
