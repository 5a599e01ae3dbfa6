"""Class colours (the cells' outlines, the table's swatches) are told apart (issue 17, 11).

Distances are CIEDE2000 (scikit-image's), not the OKLab the palette is chosen in.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from skimage.color import deltaE_ciede2000, rgb2lab

from napari_hpa.core.tasks import get_task
from napari_hpa.widgets._shared.results import class_colors


def _distances(colors: np.ndarray) -> np.ndarray:
    lab = rgb2lab(colors[None, :, :3])[0]
    d = deltaE_ciede2000(lab[:, None], lab[None])
    np.fill_diagonal(d, np.inf)
    return d


def test_the_three_greens_are_three_colours():
    """Nucleoli, Nuclear bodies and Lysosomes were three near-identical greens."""
    classes = get_task("hpa28").classes
    d = _distances(class_colors(len(classes)))
    named = [classes.index(n) for n in ("Nucleoli", "Nuclear bodies", "Lysosomes")]
    for a, b in itertools.combinations(named, 2):
        assert d[a, b] > 20, (classes[a], classes[b], d[a, b])  # before: 5.5 to 21.7


@pytest.mark.parametrize(("count", "least"), [(28, 9.0), (10, 15.0), (121, 3.0)])
def test_every_pair_of_classes_differs(count, least):
    """All 28 HPA classes (before: 3.6 at the closest pair), and other tasks' counts."""
    colors = class_colors(count)
    assert colors.shape == (count, 4) and np.all(colors[:, 3] == 1.0)
    assert _distances(colors).min() >= least
    # light enough to outline cells on a dark fluorescence field
    assert rgb2lab(colors[None, :, :3])[0][:, 0].min() > 45
    colors[:] = 0  # each caller gets its own copy
    assert _distances(class_colors(count)).min() >= least
