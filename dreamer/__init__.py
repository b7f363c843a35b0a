__version__ = "0.3.0"  # pyproject.toml holds the same (tests/test_layer_bias.py)
