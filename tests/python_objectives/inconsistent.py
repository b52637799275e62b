"""Loss is -p but the weight is NLL's: `plugins check` must catch it."""
NAME = "inconsistent_py"
FORMULA = "f(p) = 1 - p"


def loss(p, params):
    return 1 - p


def weight(p, params):
    return 1.0 + 0 * p
