NAME = "raises_py"


def loss(p, params):
    return 1 - p


def weight(p, params):
    scale = 1 / 0
    return p * scale
