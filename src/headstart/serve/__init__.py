"""Serving: the predictor (no web imports here)."""

from headstart.serve.predictor import Prediction, Predictor, expand_inputs

__all__ = ["Prediction", "Predictor", "expand_inputs"]
