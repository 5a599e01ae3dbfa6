"""Models: networks, the checkpoint format, the registry, input tiles, the Predictor, metrics."""
