"""Serving and predicting: the HTTP server (``serve.app``, torch-free for an ONNX export)
and the PyTorch predictor of a run folder (``serve.predictor``, loaded on first use)."""

from headstart.runtime.predictions import Prediction, expand_inputs

__all__ = ["Prediction", "Predictor", "expand_inputs"]


def __getattr__(name: str) -> object:
    """``Predictor`` (it imports torch), imported when first used."""
    if name != "Predictor":
        raise AttributeError(f"module 'headstart.serve' has no attribute {name!r}")
    from headstart.serve.predictor import Predictor

    return Predictor
