"""Choosing by evidence (issue 14): transferability scores on cached features, to rank
backbones and strategies on the user's own data before training them."""

from headstart.recommend.transferability import knn_loo_accuracy, logme

__all__ = ["knn_loo_accuracy", "logme"]
