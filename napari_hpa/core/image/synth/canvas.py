"""The canvas of a synthetic field: cell geometry, drawing primitives, reference stains.

A :class:`Canvas` holds the per-pixel and per-cell geometry of one field of cells
(distances to the nucleus and the cell edge, centrosomes, soft masks) and the
field's random Generator; the painters here and in ``patterns`` draw on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

F32 = np.float32


@dataclass
class Canvas:
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
    # painted by make_field once the layout exists (the painters after them read them)
    nucleoli: np.ndarray = field(init=False, repr=False)
    mt: np.ndarray = field(init=False, repr=False)
    er: np.ndarray = field(init=False, repr=False)

    @property
    def n(self) -> int:
        """Number of cells."""
        return len(self.r)

    def each(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Owner ids and per-cell indices, ``k`` per cell."""
        own = np.repeat(np.arange(1, self.n + 1), k)
        return own, own - 1

    def tex(self, sigma: float) -> np.ndarray:
        """Smooth texture, correlation length ``sigma`` in cell-scaled px."""
        return smooth_noise(self.rng, self.shape, sigma * self.s)

    def peri(self, frac: float) -> np.ndarray:
        """Perinuclear falloff, 1 at the nucleus, decay ``frac`` x mean cell radius."""
        return np.exp(-np.clip(self.nuc_px, 0, None) / (frac * float(self.r.mean())))


# ---------------------------------------------------------------- primitives


def gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    """Blur by ``sigma`` px; below 0.2 px the blur is invisible, so ``x`` is returned."""
    return ndi.gaussian_filter(x, sigma, truncate=3.0) if sigma > 0.2 else x


def to_peak(x: np.ndarray) -> np.ndarray:
    """Scale ``x`` so that its maximum is 1 (an all-zero ``x`` stays zero)."""
    hi = float(x.max())
    return x / hi if hi > 0 else x


def ring_profile(d: np.ndarray, width: float) -> np.ndarray:
    """Return a Gaussian falloff of the distance ``d`` from an outline: 1 on it."""
    return np.exp(-((d / width) ** 2))


def upsample_box(x: np.ndarray, f: int, shape: tuple[int, int]) -> np.ndarray:
    """Integer-factor linear upsampling (nearest, then a box of width f), cropped."""
    if f > 1:
        x = ndi.uniform_filter(np.repeat(np.repeat(x, f, 0), f, 1), f)
    return x[: shape[0], : shape[1]]


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Smooth zero-mean, unit-std noise, made at low resolution when ``sigma`` is large."""
    f = max(1, int(sigma // 1.5))
    h, w = -(-shape[0] // f) + 1, -(-shape[1] // f) + 1
    x = upsample_box(gaussian(rng.standard_normal((h, w), dtype=F32), sigma / f), f, shape)
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


def random_walks(
    c: Canvas, y0, x0, heading, n_steps: int, curv: float, step: float = 0.7
) -> tuple[np.ndarray, np.ndarray]:
    """Walk persistently at random: (N, n_steps) coordinates starting at (y0, x0)."""
    turn = c.rng.normal(0.0, curv, (len(y0), n_steps)).astype(F32)
    th = np.asarray(heading, F32)[:, None] + np.cumsum(turn, axis=1)
    sy, sx = np.sin(th), np.cos(th)
    ys = np.asarray(y0, F32)[:, None] + step * (np.cumsum(sy, axis=1) - sy[:, :1])
    xs = np.asarray(x0, F32)[:, None] + step * (np.cumsum(sx, axis=1) - sx[:, :1])
    return ys, xs


def splat(c: Canvas, ys, xs, owner=None, w=None) -> np.ndarray:
    """Accumulate points into an image, optionally weighted by ``w``.

    With ``owner``, keep only the points in that cell (rows of 2-D walks stop at
    their first exit).
    """
    h, wd = c.shape
    yi, xi = np.rint(ys).astype(np.intp), np.rint(xs).astype(np.intp)
    ok = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < wd)
    if owner is not None:
        lab = np.zeros(yi.shape, np.int32)
        lab[ok] = c.cell[yi[ok], xi[ok]]
        ok &= lab == np.asarray(owner)
        if ok.ndim == 2:
            ok = np.cumprod(ok, axis=1).astype(bool)
    wts = None if w is None else np.broadcast_to(np.asarray(w, F32), yi.shape)[ok]
    out = np.bincount(yi[ok] * wd + xi[ok], wts, minlength=h * wd)
    return out.reshape(h, wd).astype(F32)


def sample_points(c: Canvas, weight: np.ndarray, density: float, count: int | None = None):
    """Draw points with probability proportional to ``weight``: (ys, xs, owner ids).

    ``count`` points, or about ``density`` per 100 cell-scaled px^2 when it is None.
    """
    p = weight.ravel().astype(np.float64)
    tot = p.sum()
    n = int(c.rng.poisson(density * tot / (c.s * c.s) / 100.0)) if count is None else count
    if n == 0 or tot <= 0:
        return np.zeros(0, F32), np.zeros(0, F32), np.zeros(0, np.int32)
    idx = c.rng.choice(p.size, size=n, p=p / tot)
    jy, jx = c.rng.uniform(-0.5, 0.5, (2, n)).astype(F32)
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


def lay_out_cells(rng: np.random.Generator, size: int, n_cells: int | None, touch: bool) -> Canvas:
    """Lay out a field's cells and nuclei: the geometry that every painter reads.

    ``n_cells`` None draws a count that suits ``size``; ``touch`` packs the cells
    closer, into a colony whose cells touch.
    """
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
    best = np.full((size, size), np.inf, F32)
    nuc_px = np.full((size, size), np.inf, F32)
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
        dy = (np.arange(box[0].start, box[0].stop, dtype=F32) - cy)[:, None]
        dx = (np.arange(box[1].start, box[1].stop, dtype=F32) - cx)[None, :]
        d = _shape_d(dy, dx, g)
        win = (d < 1.0) & (d < best[box])
        best[box][win] = d[win]
        cell[box][win] = i + 1
        boxes.append((box, gn))
    for i, (box, gn) in enumerate(boxes):  # nucleus distance on the cell's own pixels
        own = cell[box] == i + 1
        yy, xx = np.nonzero(own)
        dy = (yy + box[0].start - nuc_c[i, 0]).astype(F32)
        dx = (xx + box[1].start - nuc_c[i, 1]).astype(F32)
        nuc_px[box][own] = (_shape_d(dy, dx, gn) - 1.0) * rn[i]
    inside = cell > 0
    mx, mn = ndi.maximum_filter(cell, 3), ndi.minimum_filter(cell, 3)
    mn_nb = ndi.minimum_filter(np.where(inside, cell, np.int32(1 << 30)), 3)
    boundary = inside & ((mx != cell) | (mn != cell))
    junction = inside & ((mx > cell) | (mn_nb < cell))
    edge = (ndi.distance_transform_edt(~boundary).astype(F32) if boundary.any()
            else np.full(cell.shape, 1e6, F32))  # fmt: skip
    ext = np.where(inside, cell, ndi.maximum_filter(cell, 2 * int(2 * s + 1) + 1))
    cell_soft = np.clip(gaussian(inside.astype(F32), 0.7 * s) * 1.3, 0, 1) * (ext > 0)
    nuc_soft = np.clip(0.5 - nuc_px / (0.8 * s + 0.3), 0, 1).astype(F32)
    return Canvas(rng, (size, size), s, cell, ext, nuc_px, edge, junction, cell_soft, nuc_soft,
                cell_soft * (1 - nuc_soft), centre, nuc_c, cen, r, rn, phi)  # fmt: skip


def paint_nucleoli(c: Canvas) -> np.ndarray:
    """1-4 lobed spots per nucleus (6-point clusters)."""
    i = np.repeat(np.arange(c.n), c.rng.integers(1, 5, c.n))
    m = len(i)
    rad, ang = c.rn[i] * 0.5 * np.sqrt(c.rng.random(m)), c.rng.uniform(0, 2 * np.pi, m)
    jy, jx = c.rng.normal(0, 1, (2, m, 6)) * (c.rn[i] * c.rng.uniform(0.05, 0.12, m))[:, None]
    y, x = c.nuc_c[i, 0] + rad * np.sin(ang), c.nuc_c[i, 1] + rad * np.cos(ang)
    img = splat(c, y[:, None] + jy, x[:, None] + jx, w=c.rng.uniform(0.6, 1.0, (m, 1)))
    return to_peak(gaussian(img, 0.1 * float(c.rn.mean()))) * c.nuc_soft


# ----------------------------------------------------------- reference stains


def paint_microtubules(c: Canvas) -> np.ndarray:
    """Paint the microtubule stain: curved filaments, a third of them from the centrosome."""
    own, i = c.each(int(40 + 40 * c.s))
    m = len(i)
    rad, ang = c.r[i] * 0.85 * np.sqrt(c.rng.random(m)), c.rng.uniform(0, 2 * np.pi, m)
    from_cen = np.arange(m) % 3 == 0  # a third grow from the centrosome
    y0 = np.where(from_cen, c.cen[i, 0], c.centre[i, 0] + rad * np.sin(ang))
    x0 = np.where(from_cen, c.cen[i, 1], c.centre[i, 1] + rad * np.cos(ang))
    ys, xs = random_walks(
        c, y0, x0, c.rng.uniform(0, 2 * np.pi, m), int(1.7 * c.r.max() / 0.7), 0.06
    )
    mt = gaussian(splat(c, ys, xs, own[:, None], c.rng.uniform(0.3, 1.0, (m, 1))), 0.5 * c.s + 0.3)
    mt = np.clip(mt / (np.percentile(mt[c.cell > 0], 98) + 1e-6), 0, 1.0)
    return mt * (1 - 0.6 * c.nuc_soft) + c.cyto * (0.15 + 0.04 * c.tex(3))


def paint_er(c: Canvas) -> np.ndarray:
    """Paint the ER stain: a reticulum, densest around the nucleus, and the nuclear rim."""
    f = max(1, int(c.s))  # reticulum: zero-crossings of band-passed noise
    white = c.rng.standard_normal((-(-c.shape[0] // f) + 1,) * 2, dtype=F32)
    bp = upsample_box(gaussian(white, 1.1 * c.s / f) - gaussian(white, 2.6 * c.s / f), f, c.shape)
    net = np.exp(-((bp / (0.45 * bp.std() + 1e-9)) ** 2))
    er = net * c.cyto * (0.2 + 0.8 * c.peri(0.35)) * (0.8 + 0.2 * c.tex(6))
    ring = ring_profile(c.nuc_px, 0.9 * c.s + 0.4) * (c.cell > 0)
    return gaussian(er + 0.5 * ring + 0.08 * c.nuc_soft, 0.45 * c.s)


def paint_nucleus(c: Canvas) -> np.ndarray:
    """Paint the nucleus stain: each nucleus its own brightness, dimmer at its nucleoli."""
    lvl = c.rng.uniform(0.55, 1.0, c.n + 1).astype(F32)[c.cell]
    tex = c.tex(1.2) + 0.5 * c.tex(4)
    return gaussian(c.nuc_soft * lvl * (0.78 + 0.1 * tex) * (1 - 0.45 * c.nucleoli), 0.5 * c.s)
