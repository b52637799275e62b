"""The -p^alpha family in Python: f(p) = (1 - p^alpha) / alpha, weight p^alpha; alpha -> 0 is NLL."""

import numpy as np

NAME = "general_family_py"
DESCRIPTION = "-p^alpha family, written in Python"
FORMULA = "f(p) = (1 - p^alpha) / alpha"
PARAMS = [("alpha", float, 1.0, "exponent alpha; 1 is -p, 0 is NLL")]


def validate(params):
    if not np.isfinite(params["alpha"]):
        raise ValueError(f"alpha must be finite, got {params['alpha']}")


def loss(p, params):
    alpha = params["alpha"]
    if abs(alpha) < 1e-8:
        return -np.log(p)
    # 1 - p^alpha = -expm1(alpha log p), accurate when p^alpha is close to 1.
    return -np.expm1(alpha * np.log(p)) / alpha


def weight(p, params):
    return np.exp(params["alpha"] * np.log(p))
