"""Labels: the annotations database (model and user labels per image and cell) and its exports."""
