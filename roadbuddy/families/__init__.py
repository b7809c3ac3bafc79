"""The model families: loading, pixels, prompts, encoding and positions, one module per family."""
