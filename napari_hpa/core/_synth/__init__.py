"""Private parts of :mod:`napari_hpa.core.synth`: the canvas of cells with its drawing
primitives and reference stains (``canvas``), and the protein classes' patterns
(``patterns``)."""
