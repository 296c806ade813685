"""Evaluation: accuracy, per-class report and confusion matrix of a trained run."""

from headstart.evaluation.evaluate import Evaluation, eval_samples, evaluate_run

__all__ = ["Evaluation", "eval_samples", "evaluate_run"]
