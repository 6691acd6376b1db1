"""Polygon and oriented-box geometry shared by every package.

Oriented-box convention (fixed for d2c, mmsar and sarclip_train):
``(cx, cy, w, h, angle)`` with ``w >= h`` (w is the long side) and ``angle`` in degrees in ``[0, 180)``:
the direction of the long side measured from the image's +x axis towards +y (clockwise on screen, since
y points down). A square has its angle folded into ``[0, 90)``.

Canonical polygon: vertices ordered clockwise on screen (positive shoelace area with y down), starting at
the top-most vertex (smallest y, then smallest x). Either input vertex order, and any start vertex, gives
the same canonical polygon.

The 4-point case, by far the most common, is vectorised over many polygons at once; general polygons use
shapely.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ANGLE_EPS = 1e-7


def signed_area(polygons: np.ndarray) -> np.ndarray:
    """Shoelace area of ``(..., N, 2)`` polygons; positive when clockwise on screen (y down)."""
    x = polygons[..., 0]
    y = polygons[..., 1]
    return 0.5 * np.sum(x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y, axis=-1)


def canonical_polygon(points: np.ndarray) -> np.ndarray:
    """Return ``points`` (N, 2) clockwise on screen, starting at the top-most, then left-most vertex."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if signed_area(pts) < 0:
        pts = pts[::-1]
    start = int(np.lexsort((pts[:, 0], pts[:, 1]))[0])
    return np.roll(pts, -start, axis=0)


def canonical_quads(quads: np.ndarray) -> np.ndarray:
    """Vectorised :func:`canonical_polygon` for ``(M, 4, 2)`` quadrilaterals."""
    q = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)
    flip = signed_area(q) < 0
    q = np.where(flip[:, None, None], q[:, ::-1, :], q)
    # start at the top-most vertex, the left-most of those on a tie
    ys = q[..., 1]
    is_top = ys == _min4(_split4(ys))[:, None]
    start = np.argmin(np.where(is_top, q[..., 0], np.inf), axis=1)
    idx = (np.arange(4)[None, :] + start[:, None]) % 4
    return np.take_along_axis(q, idx[:, :, None], axis=1)


def _fold_angle(angle_deg: np.ndarray, square: np.ndarray) -> np.ndarray:
    a = np.mod(angle_deg, 180.0)
    a = np.where(a >= 180.0 - ANGLE_EPS, 0.0, a)
    a_sq = np.mod(a, 90.0)
    a_sq = np.where(a_sq >= 90.0 - ANGLE_EPS, 0.0, a_sq)
    return np.where(square, a_sq, a)


# The six pairs of four points: the four edges of a quadrilateral and its two diagonals.
_PAIR_A = np.array([0, 1, 2, 3, 0, 1])
_PAIR_B = np.array([1, 2, 3, 0, 2, 3])


def min_area_rect_quads(quads: np.ndarray) -> np.ndarray:
    """Minimum-area oriented boxes ``(M, 5)`` of ``(M, 4, 2)`` point sets, in the d2c convention.

    A minimum-area rectangle has one side along an edge of the convex hull; every hull edge of four points
    joins two of them, so trying the six pairwise directions is exact.

    Written on ``(6, M)`` and ``(M,)`` rows, element by element: numpy's broadcasts and reductions over
    axes of length 2 to 6 cost several times more (per-row inner loops), for the same floating-point
    results (each value comes from the same operations in the same order).
    """
    q = np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2)
    xs, ys = q[:, :, 0].T, q[:, :, 1].T  # (4, M) each
    dx, dy = xs[_PAIR_B] - xs[_PAIR_A], ys[_PAIR_B] - ys[_PAIR_A]  # (6, M): each pair's direction
    norm = np.sqrt(dx * dx + dy * dy)
    norm[norm == 0] = 1.0
    ux, uy = dx / norm, dy / norm  # unit direction u; its perpendicular v is (-uy, ux)
    vx = -uy
    pu = [ux * xs[k] + uy * ys[k] for k in range(4)]  # each point's projections on u and v, (6, M)
    pv = [vx * xs[k] + ux * ys[k] for k in range(4)]
    pu_max, pu_min, pv_max, pv_min = _max4(pu), _min4(pu), _max4(pv), _min4(pv)
    lu = pu_max - pu_min
    lv = pv_max - pv_min
    best = np.argmin((lu * lv).T, axis=1)  # the smallest area; the first pair on a tie
    pick = (best, np.arange(q.shape[0]))
    lu_b, lv_b, ux_b, uy_b, vx_b = lu[pick], lv[pick], ux[pick], uy[pick], vx[pick]
    cu = 0.5 * (pu_max[pick] + pu_min[pick])
    cv = 0.5 * (pv_max[pick] + pv_min[pick])
    cx = ux_b * cu + vx_b * cv
    cy = uy_b * cu + ux_b * cv
    long_is_u = lu_b >= lv_b
    w = np.where(long_is_u, lu_b, lv_b)
    h = np.where(long_is_u, lv_b, lu_b)
    angle = np.degrees(np.arctan2(np.where(long_is_u, uy_b, ux_b), np.where(long_is_u, ux_b, vx_b)))
    square = np.isclose(w, h, rtol=1e-9, atol=1e-9)
    angle = _fold_angle(angle, square)
    return np.stack([cx, cy, w, h, angle], axis=1)


def _max4(a: Sequence[np.ndarray]) -> np.ndarray:
    """The largest of four arrays, element by element (the same values as a reduction over them)."""
    return np.maximum(np.maximum(a[0], a[1]), np.maximum(a[2], a[3]))


def _min4(a: Sequence[np.ndarray]) -> np.ndarray:
    """The smallest of four arrays, element by element (the same values as a reduction over them)."""
    return np.minimum(np.minimum(a[0], a[1]), np.minimum(a[2], a[3]))


def min_area_rect(points: np.ndarray) -> tuple[float, float, float, float, float]:
    """Oriented box of any point set (3 or more points) through shapely's minimum rotated rectangle."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 4:
        return tuple(float(v) for v in min_area_rect_quads(pts[None])[0])  # type: ignore[return-value]
    from shapely.geometry import MultiPoint

    rect = MultiPoint([tuple(p) for p in pts]).minimum_rotated_rectangle
    coords = np.asarray(rect.exterior.coords)[:4] if rect.geom_type == "Polygon" else None
    if coords is None or coords.shape[0] < 4:
        raise ValueError(f"degenerate point set: expected a 2-D extent, got {pts.tolist()}")
    return tuple(float(v) for v in min_area_rect_quads(coords[None])[0])  # type: ignore[return-value]


def obb_to_polygon(obb: tuple[float, float, float, float, float] | np.ndarray) -> np.ndarray:
    """Corners ``(4, 2)`` of an oriented box, canonical order."""
    return obbs_to_polygons(np.asarray(obb, dtype=np.float64)[None])[0]


def obbs_to_polygons(obbs: np.ndarray) -> np.ndarray:
    """Vectorised corners ``(M, 4, 2)`` of ``(M, 5)`` oriented boxes, canonical order."""
    o = np.asarray(obbs, dtype=np.float64).reshape(-1, 5)
    cx, cy, w, h, a = o.T
    rad = np.radians(a)
    u = np.stack([np.cos(rad), np.sin(rad)], axis=1) * (w / 2)[:, None]
    v = np.stack([-np.sin(rad), np.cos(rad)], axis=1) * (h / 2)[:, None]
    c = np.stack([cx, cy], axis=1)
    corners = np.stack([c - u - v, c + u - v, c + u + v, c - u + v], axis=1)
    return canonical_quads(corners)


def hbb_of(polygons: np.ndarray) -> np.ndarray:
    """Axis-aligned boxes ``(..., 4)`` as ``(x_min, y_min, x_max, y_max)``."""
    p = np.asarray(polygons, dtype=np.float64)
    if p.ndim >= 2 and p.shape[-2] == 4:  # quadrilaterals, the common case: element by element (see min_area_rect_quads)
        xs, ys = _split4(p[..., 0]), _split4(p[..., 1])
        return np.stack([_min4(xs), _min4(ys), _max4(xs), _max4(ys)], axis=-1)
    return np.concatenate([p.min(axis=-2), p.max(axis=-2)], axis=-1)


def _split4(a: np.ndarray) -> list[np.ndarray]:
    """The four columns of the last axis of ``a`` (length 4)."""
    return [a[..., 0], a[..., 1], a[..., 2], a[..., 3]]


def rotated_rect_from_radians(cx: float, cy: float, w: float, h: float, theta: float) -> np.ndarray:
    """Corners of roLabelImg's ``robndbox`` (angle in radians, from +x towards +y), canonical order."""
    return obb_to_polygon((cx, cy, w, h, math.degrees(theta)))


def finite(points: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(points)))
