"""Headless core of napari-hpa. Nothing below this package imports Qt, napari or magicgui."""
