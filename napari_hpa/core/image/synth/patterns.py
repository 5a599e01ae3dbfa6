"""What each HPA class looks like in the protein channel, painted on a :class:`Canvas`.

:data:`PATTERNS` maps an HPA28 class id to its painter; :func:`mixing_level` sets
how bright a pattern is when a protein shows several.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .canvas import (
    F32,
    Canvas,
    gaussian,
    random_walks,
    ring_profile,
    sample_points,
    splat,
    to_peak,
)

# ------------------------------------------------------------ protein classes


def _dots(c: Canvas, weight, density, sigma, wlo=0.5, clusters=1, spread=0.0) -> np.ndarray:
    ys, xs, own = sample_points(c, weight, density)
    if clusters > 1:
        j = c.rng.normal(0, spread, (2, len(ys), clusters))
        ys, xs = ys[:, None] + j[0], xs[:, None] + j[1]
    w = c.rng.uniform(wlo, 1.0, (len(own), 1) if clusters > 1 else len(own))
    return gaussian(splat(c, ys, xs, w=w), sigma)


def _speckles(c: Canvas) -> np.ndarray:
    inner = c.nuc_soft * (c.nuc_px < -1.5 * c.s) * (1 - c.nucleoli)
    dots = _dots(c, inner, 6.0, 0.8 * c.s + 0.2, clusters=3, spread=0.8 * c.s)
    hi = np.percentile(dots[inner > 0.5], 95) if np.any(inner > 0.5) else 1.0
    return np.clip(dots / (hi + 1e-6), 0, 1) * c.nuc_soft + 0.15 * c.nuc_soft * (1 - c.nucleoli)


def _golgi(c: Canvas) -> np.ndarray:
    """Short ribbons in a crescent by the nucleus, on the centrosome side."""
    own, i = c.each(14)
    ang = c.phi[i] + c.rng.normal(0, 0.45, len(i))
    rad = c.rn[i] + c.rng.gamma(2.0, 1.2 * c.s, len(i))
    y, x = c.nuc_c[i, 0] + rad * np.sin(ang), c.nuc_c[i, 1] + rad * np.cos(ang)
    head = ang + np.pi / 2 + c.rng.normal(0, 0.5, len(i))
    ys, xs = random_walks(c, y, x, head, int(6 * c.s + 3), 0.3)
    img = gaussian(
        splat(c, ys, xs, own[:, None], c.rng.uniform(0.5, 1, (len(i), 1))), 0.7 * c.s + 0.3
    )
    lit = img[img > 0.1 * img.max()]  # ribbons cross in a few hot spots: the stack's peak
    return np.clip(img / (np.percentile(lit, 90) + 1e-6), 0, 1) if lit.size else img


def _endosomes(c: Canvas) -> np.ndarray:
    wgt = c.cyto * (0.3 + c.peri(0.4))
    small = to_peak(_dots(c, wgt, 4.0, 0.6 * c.s + 0.3, wlo=0.3))
    return small + to_peak(_dots(c, wgt, 1.2, 1.1 * c.s + 0.3, wlo=0.4)) + 0.05 * c.cyto


def _intermediate(c: Canvas) -> np.ndarray:
    """Wavy long filaments starting around the nucleus."""
    wgt = c.cyto * np.exp(-np.abs(c.nuc_px) / (0.15 * c.r.mean()))
    ys, xs, own = sample_points(c, wgt, 0.0, count=int(30 + 20 * c.s) * c.n)
    head = c.rng.uniform(0, 2 * np.pi, len(ys))
    wy, wx = random_walks(c, ys, xs, head, int(2.0 * c.r.max() / 0.7), 0.07)
    img = splat(c, wy, wx, own[:, None], c.rng.uniform(0.4, 1.0, (len(ys), 1)))
    return to_peak(gaussian(img, 0.5 * c.s + 0.3)) + 0.05 * c.cyto


def _actin(c: Canvas) -> np.ndarray:
    """Straight, roughly parallel stress fibres across each cell plus a cortical rim."""
    own, i = c.each(int(6 + 5 * c.s))
    theta = c.rng.uniform(0, np.pi, c.n)[i] + c.rng.normal(0, 0.12, len(i))
    off = c.rng.uniform(-0.85, 0.85, len(i)) * c.r[i]
    y, x = c.centre[i, 0] + off * np.cos(theta), c.centre[i, 1] - off * np.sin(theta)
    steps, w = int(1.6 * c.r.max() / 0.7), c.rng.uniform(0.3, 1.0, (len(i), 1))
    fibres = [splat(c, *random_walks(c, y, x, theta + d, steps, 0.0), own[:, None], w)
              for d in (0.0, np.pi)]  # fmt: skip
    img = fibres[0] + fibres[1]
    return to_peak(gaussian(img, 0.45 * c.s + 0.3)) + 0.25 * ring_profile(c.edge, 1.2 * c.s) * (
        c.ext > 0
    )


def _focal_adhesions(c: Canvas) -> np.ndarray:
    """Short radial dashes just inside the cell edge."""
    wgt = ((c.edge > 1.0 * c.s) & (c.edge < 4.0 * c.s) & (c.cell > 0)).astype(F32)
    ys, xs, own = sample_points(c, wgt, 2.5)
    i = own - 1
    head = np.arctan2(c.centre[i, 0] - ys, c.centre[i, 1] - xs)
    wy, wx = random_walks(c, ys, xs, head, int(5 * c.s + 2), 0.05)
    img = splat(c, wy, wx, own[:, None], c.rng.uniform(0.5, 1, (len(i), 1)))
    return to_peak(gaussian(img, 0.55 * c.s + 0.3)) + 0.06 * c.cyto


def _centrosome(c: Canvas) -> np.ndarray:
    _, i = c.each(2)
    off = c.rng.normal(0, 1.2 * c.s, (2, len(i)))
    img = splat(c, c.cen[i, 0] + off[0], c.cen[i, 1] + off[1])
    return to_peak(gaussian(img, 1.1 * c.s + 0.3)) + 0.05 * c.cyto


def _lipid_droplets(c: Canvas) -> np.ndarray:
    """Small rings scattered in the cytoplasm."""
    ys, xs, _ = sample_points(c, c.cyto * (c.edge > 3 * c.s), 0.5)
    rad = c.rng.uniform(1.2, 3.0, (len(ys), 1)) * c.s
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    img = splat(c, ys[:, None] + rad * np.sin(t), xs[:, None] + rad * np.cos(t),
                 w=c.rng.uniform(0.5, 1, (len(ys), 1)))  # fmt: skip
    return gaussian(img, 0.5 * c.s + 0.3)


def _mitochondria(c: Canvas) -> np.ndarray:
    """Short curved tubules, denser around the nucleus."""
    ys, xs, own = sample_points(c, c.cyto * (0.25 + c.peri(0.3)), 5.0)
    k = int(7 * c.s + 3)
    wy, wx = random_walks(c, ys, xs, c.rng.uniform(0, 2 * np.pi, len(ys)), k, 0.25)
    lens = c.rng.integers(max(2, k // 3), k + 1, len(ys))
    w = (np.arange(k)[None, :] < lens[:, None]) * c.rng.uniform(0.4, 1, (len(ys), 1))
    return gaussian(splat(c, wy, wx, own[:, None], w), 0.6 * c.s + 0.3)


def _aggresome(c: Canvas) -> np.ndarray:
    """Paint one large, compact, bright perinuclear blob in most cells.

    About a third of the nucleus across: a solid round inclusion, unlike the Golgi's
    ribbons.
    """
    has = c.rng.random(c.n) < 0.8
    has[c.rng.integers(c.n)] = True
    i = np.repeat(np.flatnonzero(has), 40)
    ang = c.phi[i] + np.pi + c.rng.normal(0, 0.15, len(i))
    rad = 1.1 * c.rn[i] + 2.0 * c.s
    jy, jx = c.rng.normal(0, 1.0, (2, len(i))) * (0.12 * c.rn[i] + 0.5 * c.s)
    img = splat(c, c.nuc_c[i, 0] + rad * np.sin(ang) + jy, c.nuc_c[i, 1] + rad * np.cos(ang) + jx)
    return to_peak(gaussian(img, 1.6 * c.s)) + 0.1 * c.cyto


PATTERNS: dict[int, Callable[[Canvas], np.ndarray]] = {
    0: lambda c: c.nuc_soft * (0.8 + 0.15 * c.tex(1.3)) * (1 - 0.85 * c.nucleoli),
    1: lambda c: (
        ring_profile(c.nuc_px + 0.4 * c.s, 0.8 * c.s + 0.4)
        * (c.cell > 0)
        * (0.8 + 0.2 * c.tex(1.5))
    ),
    2: lambda c: c.nucleoli + 0.04 * c.nuc_soft,
    4: _speckles,
    5: lambda c: _dots(c, (c.nuc_px < -2 * c.s) * (1 - c.nucleoli), 0.8, 0.75 * c.s + 0.3, 0.7),
    6: lambda c: c.er * (0.85 + 0.15 * c.tex(2)),
    7: _golgi,
    9: _endosomes,
    11: _intermediate,
    12: _actin,
    13: _focal_adhesions,
    14: lambda c: c.mt * (0.9 + 0.1 * c.tex(2)),
    19: _centrosome,
    20: _lipid_droplets,
    21: lambda c: (
        ring_profile(c.edge, 0.9 * c.s + 0.4) * (c.ext > 0) * (0.8 + 0.2 * c.tex(2)) + 0.04 * c.cyto
    ),
    22: lambda c: (
        to_peak(gaussian(c.junction.astype(F32), 0.8 * c.s + 0.3)) * (0.8 + 0.2 * c.tex(2))
        + 0.04 * c.cyto
    ),
    23: _mitochondria,
    24: _aggresome,
    25: lambda c: c.cyto * (0.8 + 0.12 * (c.tex(4) + 0.5 * c.tex(1))) + 0.05 * c.nuc_soft,
}

#: Range of the fraction of a cell's area that a pattern lights (see :func:`mixing_level`).
COVERAGE_RANGE: tuple[float, float] = (0.03, 0.5)


def mixing_level(pattern: np.ndarray, cell: np.ndarray) -> float:
    """Relative brightness of a class's pattern (peak 1) when a protein shows several.

    A protein spread over a large compartment (cytosol, the microtubule mesh) is
    dilute there; the same amount bound to a compact structure (Golgi, centrosome,
    aggresome) is concentrated and bright, which is how HPA images show them. The
    level is ``coverage ** -0.5``, coverage being the fraction of the cells' area
    the pattern lights (over a quarter of its peak), clipped to
    :data:`COVERAGE_RANGE` (so at most 4x between classes), and 1 for the most
    compact. With every pattern at the same peak, compact structures vanished under
    diffuse ones and their labels could not be seen. A one-label field is unaffected
    (the plane is normalised).
    """
    inside = pattern[cell > 0]
    coverage = float((inside > 0.25).mean()) if inside.size else 1.0
    lo, hi = COVERAGE_RANGE
    return float((lo / np.clip(coverage, lo, hi)) ** 0.5)
