"""Images: reading and writing them, their channels, their cells, and generated fields."""
