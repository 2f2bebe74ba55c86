"""The risk map: grid and cell meaning, tokens, transformer, training, live predictor, node."""
