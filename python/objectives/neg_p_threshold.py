"""Thresholded -p in Python, as a whole-batch objective: -p on the tokens with p >= q (side "top") or
p <= q (side "bottom"); the others leave the loss and the normaliser. Written against the inputs a
native objective gets (log-probs, mask, sequence starts, step)."""

import numpy as np

NAME = "neg_p_threshold_py"
DESCRIPTION = "-p on tokens with p >= q (side=top) or p <= q (side=bottom) only, in Python"
FORMULA = "f(p) = (1 - p) * 1[p >= q | p <= q]"
PARAMS = [
    {"name": "q", "type": float, "default": None, "doc": "probability threshold in [0, 1]"},
    {"name": "side", "type": str, "default": "top", "choices": ["top", "bottom"], "doc": "which side is kept"},
]


def validate(params):
    if "q" not in params:
        raise ValueError("set the threshold q")
    if not 0.0 <= params["q"] <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {params['q']}")


def compute(batch, params):
    p = np.exp(batch.logp.astype(np.float64))
    kept = p >= params["q"] if params["side"] == "top" else p <= params["q"]
    include = (batch.mask == 1) & kept
    return np.where(include, 1 - p, 0.0), np.where(include, p, 0.0), include
