NAME = "no_functions_py"
