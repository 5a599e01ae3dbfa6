"""Procedural HPA-like 4-channel fields of cells with known labels.

A field is a ``(4, H, W)`` float32 image in [0, 1] in :data:`HPA_CHANNELS` order
(microtubules, protein, nucleus, ER) plus ground truth: image-level HPA28 class
ids, a cell instance mask and a nucleus mask. Cells are wobbly ellipses with a
textured nucleus, a microtubule mesh partly radiating from a centrosome and a
reticular ER densest around the nucleus; the protein channel paints the drawn
classes' patterns. Everything is deterministic given ``seed`` (one numpy
Generator). Lengths scale with the cell size, so 128 px looks like 512 px
downsampled. Typical cost on one core: ~15 ms at 128 px, ~0.2 s at 512 px.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from .tasks import HPA28_CLASSES, HPA_CHANNELS

#: HPA28 class ids the generator can paint.
SUPPORTED_CLASSES: tuple[int, ...] = (
    0, 1, 2, 4, 5, 6, 7, 9, 11, 12, 13, 14, 19, 20, 21, 22, 23, 24, 25,
)  # fmt: skip
#: File colour suffix of each channel, in HPA_CHANNELS order.
CHANNEL_COLORS: tuple[str, ...] = ("red", "green", "blue", "yellow")

_F = np.float32


@dataclass
class SynthField:
    """One synthetic field and its ground truth.

    Attributes
    ----------
    image
        (4, H, W) float32 in [0, 1], channels :data:`HPA_CHANNELS`.
    labels
        Image-level HPA28 class ids, ascending (the union of ``cell_labels``).
    cell_mask, nucleus_mask
        (H, W) int32 instance labels, 0 = background; a nucleus has its cell's id.
    seed
        Seed that reproduces the field with :func:`make_field`.
    cell_labels
        Cell id -> class ids shown by that cell.
    """

    image: np.ndarray
    labels: list[int]
    cell_mask: np.ndarray
    nucleus_mask: np.ndarray
    seed: int
    cell_labels: dict[int, list[int]] = field(default_factory=dict)
    channel_names: tuple[str, ...] = HPA_CHANNELS

    @property
    def label_names(self) -> list[str]:
        return [HPA28_CLASSES[c] for c in self.labels]


@dataclass
class _Ctx:
    """Geometry shared by the painters; lengths in px, per-cell arrays indexed id - 1."""

    rng: np.random.Generator
    shape: tuple[int, int]
    s: float  # length scale: 1.0 for a 40-px cell radius
    cell: np.ndarray  # int32 cell ids
    ext: np.ndarray  # cell ids grown a little into the background
    nuc_px: np.ndarray  # signed distance to own nucleus edge (<0 inside), inf off cells
    edge: np.ndarray  # distance to the nearest cell boundary
    junction: np.ndarray  # bool, cell pixels touching another cell
    cell_soft: np.ndarray
    nuc_soft: np.ndarray
    cyto: np.ndarray
    centre: np.ndarray  # (n, 2) cell centres (y, x)
    nuc_c: np.ndarray  # (n, 2) nucleus centres
    cen: np.ndarray  # (n, 2) centrosomes
    r: np.ndarray  # (n,) cell radii
    rn: np.ndarray  # (n,) nucleus radii
    phi: np.ndarray  # (n,) direction nucleus -> centrosome
    nucleoli: np.ndarray | None = None
    mt: np.ndarray | None = None
    er: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.r)

    def each(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Owner ids and per-cell indices, ``k`` per cell."""
        own = np.repeat(np.arange(1, self.n + 1), k)
        return own, own - 1

    def tex(self, sigma: float) -> np.ndarray:
        """Smooth texture, correlation length ``sigma`` in cell-scaled px."""
        return _noise(self.rng, self.shape, sigma * self.s)

    def peri(self, frac: float) -> np.ndarray:
        """Perinuclear falloff, 1 at the nucleus, decay ``frac`` x mean cell radius."""
        return np.exp(-np.clip(self.nuc_px, 0, None) / (frac * float(self.r.mean())))


# ---------------------------------------------------------------- primitives


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    return ndi.gaussian_filter(x, sigma, truncate=3.0) if sigma > 0.2 else x


def _norm(x: np.ndarray) -> np.ndarray:
    hi = float(x.max())
    return x / hi if hi > 0 else x


def _ring(d: np.ndarray, width: float) -> np.ndarray:
    return np.exp(-((d / width) ** 2))


def _upsample(x: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Integer-factor linear upsampling (nearest, then a box of width f), cropped."""
    if f > 1:
        x = ndi.uniform_filter(np.repeat(np.repeat(x, f, 0), f, 1), f)
    return x[: shape[0], : shape[1]]


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise, made at low resolution when ``sigma`` is large."""
    f = max(1, int(sigma // 1.5))
    h, w = -(-shape[0] // f) + 1, -(-shape[1] // f) + 1
    x = _upsample(_blur(rng.standard_normal((h, w), dtype=_F), sigma / f), f, shape)
    return (x - x.mean()) / (x.std() + 1e-6)


def _shape_d(dy: np.ndarray, dx: np.ndarray, g: tuple) -> np.ndarray:
    """Normalised distance (1 on the outline) of a wobbly rotated ellipse."""
    a, b, rot, amps, phases = g
    u = dx * np.cos(rot) + dy * np.sin(rot)
    v = dy * np.cos(rot) - dx * np.sin(rot)
    z = (u + 1j * v).astype(np.complex64)
    z /= np.abs(z) + 1e-6  # e^{i theta}; wobble = 1 + sum a_k cos(k theta + p_k), k = 2, 3, 5
    z2 = z * z
    z3 = z2 * z
    co = amps * np.exp(1j * np.asarray(phases))
    wob = 1.0 + (co[0] * z2 + co[1] * z3 + co[2] * (z2 * z3)).real
    return np.sqrt((u / a) ** 2 + (v / b) ** 2) / wob


def _geom(rng: np.random.Generator, r: float, aspect: float, wobble: float) -> tuple:
    q = np.sqrt(rng.uniform(1.0, aspect))
    return (r * q, r / q, rng.uniform(0, np.pi), rng.uniform(0, wobble, 3),
            rng.uniform(0, 2 * np.pi, 3))  # fmt: skip


def _walks(c: _Ctx, y0, x0, heading, n_steps: int, curv: float, step: float = 0.7):
    """Persistent random walks: (N, n_steps) coordinates starting at (y0, x0)."""
    turn = c.rng.normal(0.0, curv, (len(y0), n_steps)).astype(_F)
    th = np.asarray(heading, _F)[:, None] + np.cumsum(turn, axis=1)
    sy, sx = np.sin(th), np.cos(th)
    ys = np.asarray(y0, _F)[:, None] + step * (np.cumsum(sy, axis=1) - sy[:, :1])
    xs = np.asarray(x0, _F)[:, None] + step * (np.cumsum(sx, axis=1) - sx[:, :1])
    return ys, xs


def _splat(c: _Ctx, ys, xs, owner=None, w=None) -> np.ndarray:
    """Accumulate points into an image; with ``owner``, keep only points in that
    cell (rows of 2-D walks stop at their first exit)."""
    h, wd = c.shape
    yi, xi = np.rint(ys).astype(np.intp), np.rint(xs).astype(np.intp)
    ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < wd)
    if owner is not None:
        lab = np.zeros(yi.shape, np.int32)
        lab[ok] = c.cell[yi[ok], xi[ok]]
        ok &= lab == np.asarray(owner)
        if ok.ndim == 2:
            ok = np.cumprod(ok, axis=1).astype(bool)
    wts = None if w is None else np.broadcast_to(np.asarray(w, _F), yi.shape)[ok]
    out = np.bincount(yi[ok] * wd + xi[ok], wts, minlength=h * wd)
    return out.reshape(h, wd).astype(_F)


def _sample(c: _Ctx, weight: np.ndarray, density: float, count: int | None = None):
    """``count`` points (or ~``density`` per 100 cell-scaled px^2) drawn with
    probability proportional to ``weight``; returns ys, xs, owner ids."""
    p = weight.ravel().astype(np.float64)
    tot = p.sum()
    n = int(c.rng.poisson(density * tot / (c.s * c.s) / 100.0)) if count is None else count
    if n == 0 or tot <= 0:
        return np.zeros(0, _F), np.zeros(0, _F), np.zeros(0, np.int32)
    idx = c.rng.choice(p.size, size=n, p=p / tot)
    jy, jx = c.rng.uniform(-0.5, 0.5, (2, n)).astype(_F)
    return idx // c.shape[1] + jy, idx % c.shape[1] + jx, c.cell.ravel()[idx]


# ------------------------------------------------------------------ geometry


def _place(rng: np.random.Generator, size: int, n: int, rmean: float, touch: bool):
    """Colony-like centres: most new cells start next to an accepted one."""
    m = 60 * n
    uni = rng.uniform(0.08, 0.92, (m, 2)) * size
    near = rng.uniform(1.25, 1.5 if touch else 1.9, m) * rmean
    ang, pick = rng.uniform(0, 2 * np.pi, m), rng.integers(0, 1 << 30, m)
    use_near = rng.random(m) < (0.9 if touch else 0.65)
    rad = rmean * rng.uniform(0.85, 1.15, m)
    acc, acc_r = [uni[0]], [rad[0]]
    for i in range(1, m):
        if len(acc) == n:
            break
        p = uni[i]
        if use_near[i]:
            p = acc[pick[i] % len(acc)] + near[i] * np.array([np.sin(ang[i]), np.cos(ang[i])])
            if not np.all((p > 0.03 * size) & (p < 0.97 * size)):
                continue
        if np.all(np.hypot(*(np.asarray(acc) - p).T) >= 0.62 * (np.asarray(acc_r) + rad[i])):
            acc.append(p)
            acc_r.append(rad[i])
    return np.asarray(acc, float), np.asarray(acc_r, float)


def _layout(rng: np.random.Generator, size: int, n_cells: int | None, touch: bool) -> _Ctx:
    if n_cells is None:
        lo = max(1, round(3 * size / 256))
        n_cells = int(rng.integers(lo, max(lo, round(8 * size / 256)) + 1))
    cover = rng.uniform(0.45, 0.65) * (1.3 if touch else 1.0)
    rmean = float(np.clip(size * np.sqrt(cover / (max(1, n_cells) * np.pi)), 0.07 * size,
                          0.4 * size))  # fmt: skip
    s = rmean / 40.0
    centre, r = _place(rng, size, max(1, int(n_cells)), rmean, touch)
    n = len(r)
    cell = np.zeros((size, size), np.int32)
    best = np.full((size, size), np.inf, _F)
    nuc_px = np.full((size, size), np.inf, _F)
    nuc_c, rn, phi, cen = np.zeros((n, 2)), np.zeros(n), np.zeros(n), np.zeros((n, 2))
    boxes = []
    for i in range(n):  # cells: nearest normalised outline wins where they overlap
        (cy, cx), ri = centre[i], r[i]
        g = _geom(rng, ri, 1.6, 0.07)
        nuc_c[i] = centre[i] + rng.normal(0, 0.06 * ri, 2)
        rn[i] = ri * rng.uniform(0.36, 0.46)
        gn = _geom(rng, rn[i], 1.35, 0.04)
        phi[i] = rng.uniform(0, 2 * np.pi)
        uy, ux = np.sin(phi[i]), np.cos(phi[i])
        cen[i] = nuc_c[i] + (1.0 / _shape_d(uy, ux, gn) + 2.5 * s) * np.array([uy, ux])
        hb = int(1.6 * ri) + 2
        box = (slice(max(0, int(cy) - hb), min(size, int(cy) + hb)),
               slice(max(0, int(cx) - hb), min(size, int(cx) + hb)))  # fmt: skip
        dy = (np.arange(box[0].start, box[0].stop, dtype=_F) - cy)[:, None]
        dx = (np.arange(box[1].start, box[1].stop, dtype=_F) - cx)[None, :]
        d = _shape_d(dy, dx, g)
        win = (d < 1.0) & (d < best[box])
        best[box][win] = d[win]
        cell[box][win] = i + 1
        boxes.append((box, gn))
    for i, (box, gn) in enumerate(boxes):  # nucleus distance on the cell's own pixels
        own = cell[box] == i + 1
        yy, xx = np.nonzero(own)
        dy = (yy + box[0].start - nuc_c[i, 0]).astype(_F)
        dx = (xx + box[1].start - nuc_c[i, 1]).astype(_F)
        nuc_px[box][own] = (_shape_d(dy, dx, gn) - 1.0) * rn[i]
    inside = cell > 0
    mx, mn = ndi.maximum_filter(cell, 3), ndi.minimum_filter(cell, 3)
    mn_nb = ndi.minimum_filter(np.where(inside, cell, np.int32(1 << 30)), 3)
    boundary = inside & ((mx != cell) | (mn != cell))
    junction = inside & ((mx > cell) | (mn_nb < cell))
    edge = (ndi.distance_transform_edt(~boundary).astype(_F) if boundary.any()
            else np.full(cell.shape, 1e6, _F))  # fmt: skip
    ext = np.where(inside, cell, ndi.maximum_filter(cell, 2 * int(2 * s + 1) + 1))
    cell_soft = np.clip(_blur(inside.astype(_F), 0.7 * s) * 1.3, 0, 1) * (ext > 0)
    nuc_soft = np.clip(0.5 - nuc_px / (0.8 * s + 0.3), 0, 1).astype(_F)
    return _Ctx(rng, (size, size), s, cell, ext, nuc_px, edge, junction, cell_soft, nuc_soft,
                cell_soft * (1 - nuc_soft), centre, nuc_c, cen, r, rn, phi)  # fmt: skip


def _nucleoli(c: _Ctx) -> np.ndarray:
    """1-4 lobed spots per nucleus (6-point clusters)."""
    i = np.repeat(np.arange(c.n), c.rng.integers(1, 5, c.n))
    m = len(i)
    rad, ang = c.rn[i] * 0.5 * np.sqrt(c.rng.random(m)), c.rng.uniform(0, 2 * np.pi, m)
    jy, jx = c.rng.normal(0, 1, (2, m, 6)) * (c.rn[i] * c.rng.uniform(0.05, 0.12, m))[:, None]
    y, x = c.nuc_c[i, 0] + rad * np.sin(ang), c.nuc_c[i, 1] + rad * np.cos(ang)
    img = _splat(c, y[:, None] + jy, x[:, None] + jx, w=c.rng.uniform(0.6, 1.0, (m, 1)))
    return _norm(_blur(img, 0.1 * float(c.rn.mean()))) * c.nuc_soft


# ----------------------------------------------------------- reference stains


def _microtubules(c: _Ctx) -> np.ndarray:
    own, i = c.each(int(40 + 40 * c.s))
    m = len(i)
    rad, ang = c.r[i] * 0.85 * np.sqrt(c.rng.random(m)), c.rng.uniform(0, 2 * np.pi, m)
    from_cen = np.arange(m) % 3 == 0  # a third grow from the centrosome
    y0 = np.where(from_cen, c.cen[i, 0], c.centre[i, 0] + rad * np.sin(ang))
    x0 = np.where(from_cen, c.cen[i, 1], c.centre[i, 1] + rad * np.cos(ang))
    ys, xs = _walks(c, y0, x0, c.rng.uniform(0, 2 * np.pi, m), int(1.7 * c.r.max() / 0.7), 0.06)
    mt = _blur(_splat(c, ys, xs, own[:, None], c.rng.uniform(0.3, 1.0, (m, 1))), 0.5 * c.s + 0.3)
    mt = np.clip(mt / (np.percentile(mt[c.cell > 0], 98) + 1e-6), 0, 1.0)
    return mt * (1 - 0.6 * c.nuc_soft) + c.cyto * (0.15 + 0.04 * c.tex(3))


def _er(c: _Ctx) -> np.ndarray:
    f = max(1, int(c.s))  # reticulum: zero-crossings of band-passed noise
    white = c.rng.standard_normal((-(-c.shape[0] // f) + 1,) * 2, dtype=_F)
    bp = _upsample(_blur(white, 1.1 * c.s / f) - _blur(white, 2.6 * c.s / f), f, c.shape)
    net = np.exp(-((bp / (0.45 * bp.std() + 1e-9)) ** 2))
    er = net * c.cyto * (0.2 + 0.8 * c.peri(0.35)) * (0.8 + 0.2 * c.tex(6))
    ring = _ring(c.nuc_px, 0.9 * c.s + 0.4) * (c.cell > 0)
    return _blur(er + 0.5 * ring + 0.08 * c.nuc_soft, 0.45 * c.s)


def _nucleus(c: _Ctx) -> np.ndarray:
    lvl = c.rng.uniform(0.55, 1.0, c.n + 1).astype(_F)[c.cell]
    tex = c.tex(1.2) + 0.5 * c.tex(4)
    return _blur(c.nuc_soft * lvl * (0.78 + 0.1 * tex) * (1 - 0.45 * c.nucleoli), 0.5 * c.s)


# ------------------------------------------------------------ protein classes


def _dots(c: _Ctx, weight, density, sigma, wlo=0.5, clusters=1, spread=0.0) -> np.ndarray:
    ys, xs, own = _sample(c, weight, density)
    if clusters > 1:
        j = c.rng.normal(0, spread, (2, len(ys), clusters))
        ys, xs = ys[:, None] + j[0], xs[:, None] + j[1]
    w = c.rng.uniform(wlo, 1.0, (len(own), 1) if clusters > 1 else len(own))
    return _blur(_splat(c, ys, xs, w=w), sigma)


def _speckles(c: _Ctx) -> np.ndarray:
    inner = c.nuc_soft * (c.nuc_px < -1.5 * c.s) * (1 - c.nucleoli)
    dots = _dots(c, inner, 6.0, 0.8 * c.s + 0.2, clusters=3, spread=0.8 * c.s)
    hi = np.percentile(dots[inner > 0.5], 95) if np.any(inner > 0.5) else 1.0
    return np.clip(dots / (hi + 1e-6), 0, 1) * c.nuc_soft + 0.15 * c.nuc_soft * (1 - c.nucleoli)


def _golgi(c: _Ctx) -> np.ndarray:
    """Short ribbons in a crescent by the nucleus, on the centrosome side."""
    own, i = c.each(14)
    ang = c.phi[i] + c.rng.normal(0, 0.45, len(i))
    rad = c.rn[i] + c.rng.gamma(2.0, 1.2 * c.s, len(i))
    y, x = c.nuc_c[i, 0] + rad * np.sin(ang), c.nuc_c[i, 1] + rad * np.cos(ang)
    head = ang + np.pi / 2 + c.rng.normal(0, 0.5, len(i))
    ys, xs = _walks(c, y, x, head, int(6 * c.s + 3), 0.3)
    img = _blur(
        _splat(c, ys, xs, own[:, None], c.rng.uniform(0.5, 1, (len(i), 1))), 0.7 * c.s + 0.3
    )
    lit = img[img > 0.1 * img.max()]  # ribbons cross in a few hot spots: the stack's peak
    return np.clip(img / (np.percentile(lit, 90) + 1e-6), 0, 1) if lit.size else img


def _endosomes(c: _Ctx) -> np.ndarray:
    wgt = c.cyto * (0.3 + c.peri(0.4))
    small = _norm(_dots(c, wgt, 4.0, 0.6 * c.s + 0.3, wlo=0.3))
    return small + _norm(_dots(c, wgt, 1.2, 1.1 * c.s + 0.3, wlo=0.4)) + 0.05 * c.cyto


def _intermediate(c: _Ctx) -> np.ndarray:
    """Wavy long filaments starting around the nucleus."""
    wgt = c.cyto * np.exp(-np.abs(c.nuc_px) / (0.15 * c.r.mean()))
    ys, xs, own = _sample(c, wgt, 0.0, count=int(30 + 20 * c.s) * c.n)
    head = c.rng.uniform(0, 2 * np.pi, len(ys))
    wy, wx = _walks(c, ys, xs, head, int(2.0 * c.r.max() / 0.7), 0.07)
    img = _splat(c, wy, wx, own[:, None], c.rng.uniform(0.4, 1.0, (len(ys), 1)))
    return _norm(_blur(img, 0.5 * c.s + 0.3)) + 0.05 * c.cyto


def _actin(c: _Ctx) -> np.ndarray:
    """Straight, roughly parallel stress fibres across each cell plus a cortical rim."""
    own, i = c.each(int(6 + 5 * c.s))
    theta = c.rng.uniform(0, np.pi, c.n)[i] + c.rng.normal(0, 0.12, len(i))
    off = c.rng.uniform(-0.85, 0.85, len(i)) * c.r[i]
    y, x = c.centre[i, 0] + off * np.cos(theta), c.centre[i, 1] - off * np.sin(theta)
    steps, w = int(1.6 * c.r.max() / 0.7), c.rng.uniform(0.3, 1.0, (len(i), 1))
    img = sum(_splat(c, *_walks(c, y, x, theta + d, steps, 0.0), own[:, None], w)
              for d in (0.0, np.pi))  # fmt: skip
    return _norm(_blur(img, 0.45 * c.s + 0.3)) + 0.25 * _ring(c.edge, 1.2 * c.s) * (c.ext > 0)


def _focal_adhesions(c: _Ctx) -> np.ndarray:
    """Short radial dashes just inside the cell edge."""
    wgt = ((c.edge > 1.0 * c.s) & (c.edge < 4.0 * c.s) & (c.cell > 0)).astype(_F)
    ys, xs, own = _sample(c, wgt, 2.5)
    i = own - 1
    head = np.arctan2(c.centre[i, 0] - ys, c.centre[i, 1] - xs)
    wy, wx = _walks(c, ys, xs, head, int(5 * c.s + 2), 0.05)
    img = _splat(c, wy, wx, own[:, None], c.rng.uniform(0.5, 1, (len(i), 1)))
    return _norm(_blur(img, 0.55 * c.s + 0.3)) + 0.06 * c.cyto


def _centrosome(c: _Ctx) -> np.ndarray:
    _, i = c.each(2)
    off = c.rng.normal(0, 1.2 * c.s, (2, len(i)))
    img = _splat(c, c.cen[i, 0] + off[0], c.cen[i, 1] + off[1])
    return _norm(_blur(img, 1.1 * c.s + 0.3)) + 0.05 * c.cyto


def _lipid_droplets(c: _Ctx) -> np.ndarray:
    """Small rings scattered in the cytoplasm."""
    ys, xs, _ = _sample(c, c.cyto * (c.edge > 3 * c.s), 0.5)
    rad = c.rng.uniform(1.2, 3.0, (len(ys), 1)) * c.s
    t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
    img = _splat(c, ys[:, None] + rad * np.sin(t), xs[:, None] + rad * np.cos(t),
                 w=c.rng.uniform(0.5, 1, (len(ys), 1)))  # fmt: skip
    return _blur(img, 0.5 * c.s + 0.3)


def _mitochondria(c: _Ctx) -> np.ndarray:
    """Short curved tubules, denser around the nucleus."""
    ys, xs, own = _sample(c, c.cyto * (0.25 + c.peri(0.3)), 5.0)
    k = int(7 * c.s + 3)
    wy, wx = _walks(c, ys, xs, c.rng.uniform(0, 2 * np.pi, len(ys)), k, 0.25)
    lens = c.rng.integers(max(2, k // 3), k + 1, len(ys))
    w = (np.arange(k)[None, :] < lens[:, None]) * c.rng.uniform(0.4, 1, (len(ys), 1))
    return _blur(_splat(c, wy, wx, own[:, None], w), 0.6 * c.s + 0.3)


def _aggresome(c: _Ctx) -> np.ndarray:
    """One large, compact, bright perinuclear blob (about a third of the nucleus
    across) in most cells: a solid round inclusion, unlike the Golgi's ribbons."""
    has = c.rng.random(c.n) < 0.8
    has[c.rng.integers(c.n)] = True
    i = np.repeat(np.flatnonzero(has), 40)
    ang = c.phi[i] + np.pi + c.rng.normal(0, 0.15, len(i))
    rad = 1.1 * c.rn[i] + 2.0 * c.s
    jy, jx = c.rng.normal(0, 1.0, (2, len(i))) * (0.12 * c.rn[i] + 0.5 * c.s)
    img = _splat(c, c.nuc_c[i, 0] + rad * np.sin(ang) + jy, c.nuc_c[i, 1] + rad * np.cos(ang) + jx)
    return _norm(_blur(img, 1.6 * c.s)) + 0.1 * c.cyto


_PATTERNS: dict[int, Callable[[_Ctx], np.ndarray]] = {
    0: lambda c: c.nuc_soft * (0.8 + 0.15 * c.tex(1.3)) * (1 - 0.85 * c.nucleoli),
    1: lambda c: (
        _ring(c.nuc_px + 0.4 * c.s, 0.8 * c.s + 0.4) * (c.cell > 0) * (0.8 + 0.2 * c.tex(1.5))
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
        _ring(c.edge, 0.9 * c.s + 0.4) * (c.ext > 0) * (0.8 + 0.2 * c.tex(2)) + 0.04 * c.cyto
    ),
    22: lambda c: (
        _norm(_blur(c.junction.astype(_F), 0.8 * c.s + 0.3)) * (0.8 + 0.2 * c.tex(2))
        + 0.04 * c.cyto
    ),
    23: _mitochondria,
    24: _aggresome,
    25: lambda c: c.cyto * (0.8 + 0.12 * (c.tex(4) + 0.5 * c.tex(1))) + 0.05 * c.nuc_soft,
}
assert tuple(sorted(_PATTERNS)) == SUPPORTED_CLASSES

#: Range of the fraction of a cell's area that a pattern lights (see :func:`_level`).
_COVERAGE_RANGE: tuple[float, float] = (0.03, 0.5)


def _level(pattern: np.ndarray, cell: np.ndarray) -> float:
    """Relative brightness of a class's pattern (peak 1) when a protein shows several.

    A protein spread over a large compartment (cytosol, the microtubule mesh) is
    dilute there; the same amount bound to a compact structure (Golgi, centrosome,
    aggresome) is concentrated and bright, which is how HPA images show them. The
    level is ``coverage ** -0.5``, coverage being the fraction of the cells' area
    the pattern lights (over a quarter of its peak), clipped to
    :data:`_COVERAGE_RANGE` (so at most 4x between classes), and 1 for the most
    compact. With every pattern at the same peak, compact structures vanished under
    diffuse ones and their labels could not be seen. A one-label field is unaffected
    (the plane is normalised).
    """
    inside = pattern[cell > 0]
    coverage = float((inside > 0.25).mean()) if inside.size else 1.0
    lo, hi = _COVERAGE_RANGE
    return float((lo / np.clip(coverage, lo, hi)) ** 0.5)


# ----------------------------------------------------------------- public API


def _finish(rng: np.random.Generator, x: np.ndarray, illum: np.ndarray, noise: float,
            gain: tuple[float, float]) -> np.ndarray:  # fmt: skip
    """Gain, uneven illumination, offset, read + shot noise; clip to [0, 1]."""
    y = _norm(x) * rng.uniform(*gain) * illum + noise * rng.uniform(0.005, 0.04)
    sd = noise * (rng.uniform(0.008, 0.03) + 0.035 * np.sqrt(np.clip(y, 0, None)))
    return np.clip(y + sd * rng.standard_normal(y.shape, dtype=_F), 0.0, 1.0).astype(_F)


def make_field(
    size: int = 256,
    classes: Sequence[int] | None = None,
    n_labels: int | tuple[int, int] = (1, 3),
    n_cells: int | None = None,
    seed: int = 0,
    noise: float = 1.0,
    mixed_cells: bool = False,
) -> SynthField:
    """Generate one square field of cells.

    Parameters
    ----------
    size
        Height and width in px.
    classes
        HPA28 class ids to draw labels from (default :data:`SUPPORTED_CLASSES`).
    n_labels
        Labels per image: an int (``1`` for single-label tasks) or ``(min, max)``.
    n_cells
        Number of cells; default scales with size (3-8 at 256 px). Fewer may fit.
    seed
        Seed of the numpy Generator: same seed, same field.
    noise
        Scale of offset, read and shot noise; 0 gives a clean image.
    mixed_cells
        If true each cell shows a non-empty subset of the image labels (whose
        union is the image label, as in HPA single-cell data); else all share them.
    """
    rng = np.random.default_rng(seed)
    pool = sorted({int(k) for k in (SUPPORTED_CLASSES if classes is None else classes)})
    if not pool or any(k not in _PATTERNS for k in pool):
        raise ValueError(f"classes must be a non-empty subset of {SUPPORTED_CLASSES}, got {pool}")
    lo, hi = (n_labels, n_labels) if isinstance(n_labels, int) else n_labels
    if not 1 <= lo <= hi:
        raise ValueError(f"n_labels must be >= 1 and min <= max, got {n_labels!r}")
    k = int(rng.integers(min(lo, len(pool)), min(hi, len(pool)) + 1))
    labels = sorted(int(v) for v in rng.choice(pool, size=k, replace=False))
    c = _layout(rng, int(size), n_cells, touch=22 in labels)
    cell_labels = {i: list(labels) for i in range(1, c.n + 1)}
    if mixed_cells and c.n > 1:
        for i in cell_labels:
            cell_labels[i] = [v for v in labels if rng.random() < 0.6] or [labels[0]]
        for v in labels:
            if not any(v in ls for ls in cell_labels.values()):
                cell_labels[int(rng.integers(1, c.n + 1))].append(v)
        cell_labels = {i: sorted(ls) for i, ls in cell_labels.items()}
    c.nucleoli = _nucleoli(c)
    c.mt, c.er = _microtubules(c), _er(c)
    blue = _nucleus(c)
    protein = np.zeros(c.shape, _F)
    for v in labels:  # per-cell expression level; 0 where the cell lacks the class
        lut = np.array([0.0] + [rng.uniform(0.5, 1.0) * (v in cell_labels[i])
                                for i in range(1, c.n + 1)], _F)  # fmt: skip
        level = rng.uniform(0.5, 1.0)
        pattern = _norm(_PATTERNS[v](c))
        protein += level * _level(pattern, c.cell) * pattern * lut[c.ext]
    illum = 1.0 + 0.12 * _noise(rng, c.shape, size / 5)
    gains = ((0.55, 0.95), (0.35, 1.0), (0.6, 1.0), (0.5, 0.9))
    planes = (c.mt, protein, blue, c.er)
    image = np.stack([_finish(rng, p, illum, noise, g) for p, g in zip(planes, gains, strict=True)])
    nucleus_mask = np.where(c.nuc_px < 0, c.cell, 0).astype(np.int32)
    return SynthField(image, labels, c.cell, nucleus_mask, int(seed), cell_labels)


def field_seed(seed: int, index: int) -> int:
    """Seed of item ``index`` of ``make_dataset(seed=seed)``; independent of ``n``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def make_dataset(
    n: int,
    size: int = 128,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    n_labels: int | tuple[int, int] = (1, 3),
    **kwargs,
) -> Iterator[SynthField]:
    """Yield ``n`` fields, item i made with ``field_seed(seed, i)`` (datasets with
    different seeds share no field); ``kwargs`` go to :func:`make_field`."""
    for i in range(int(n)):
        yield make_field(size, classes, n_labels, seed=field_seed(seed, i), **kwargs)


def to_uint8(plane: np.ndarray) -> np.ndarray:
    """[0, 1] float -> uint8, rounded."""
    return (np.clip(plane, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def write_samples(
    outdir: str | Path,
    n: int = 4,
    size: int = 512,
    seed: int = 0,
    classes: Sequence[int] | None = None,
    fmt: str = "png",
    n_labels: int | tuple[int, int] = (1, 3),
) -> Path:
    """Write ``n`` fields in HPA file layout plus a Kaggle ``labels.csv``; return ``outdir``.

    Files: ``synth_0000_red.png``, ``_green``, ``_blue``, ``_yellow`` (8-bit
    grayscale; ``fmt`` "png" or "tif"), and ``labels.csv`` with header ``Id,Target``
    (Target: space-separated ascending class ids). Fields are ``make_dataset(n,
    size, seed, classes, n_labels)``.
    """
    from PIL import Image

    ext = fmt.lower().lstrip(".")
    if ext not in ("png", "tif", "tiff"):
        raise ValueError(f"fmt must be 'png' or 'tif', got {fmt!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, f in enumerate(make_dataset(n, size, seed, classes, n_labels)):
        sid = f"synth_{i:04d}"
        for plane, color in zip(f.image, CHANNEL_COLORS, strict=True):
            Image.fromarray(to_uint8(plane)).save(out / f"{sid}_{color}.{ext}")
        rows.append([sid, " ".join(str(v) for v in f.labels)])
    with open(out / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([["Id", "Target"], *rows])
    return out
