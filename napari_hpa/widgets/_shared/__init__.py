"""What the docks share: the session per viewer, workers, result layers, tooltips, labels."""
