"""NLL with its weight returned as a scalar (broadcast to every position): f(p) = -log p, s(p) = 1."""
import numpy as np

NAME = "nll_scalar_weight"


def loss(p, params):
    return -np.log(p)


def weight(p, params):
    return 1.0
