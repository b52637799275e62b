"""-p in Python: f(p) = 1 - p, weight s(p) = -p f'(p) = p."""

NAME = "neg_p_py"
DESCRIPTION = "-p, written in Python"
FORMULA = "f(p) = 1 - p"


def loss(p, params):
    return 1 - p


def weight(p, params):
    return p
