NAME = "syntax_error_py"

def loss(p, params)
    return 1 - p
