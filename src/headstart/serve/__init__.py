"""Serving and predicting: the HTTP server (``serve.app``, torch-free for an ONNX export)
and the one predictor over any engine (:mod:`headstart.runtime.predictor`)."""

from headstart.runtime.predictions import Prediction, expand_inputs
from headstart.runtime.predictor import Predictor

__all__ = ["Prediction", "Predictor", "expand_inputs"]
