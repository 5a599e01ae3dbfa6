"""Recipes that rebuild the bundled models from the shared data (see train_bundled.py)."""
