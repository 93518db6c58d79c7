"""Box and polygon geometry shared by the tracker, the zones and the evaluation, vectorised."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.errors import ContractError


def box_iou(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """IoU matrix (len(a), len(b)) of two xyxy box arrays."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    result: npt.NDArray[np.float32] = np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)
    return result


def points_in_polygon(points: npt.ArrayLike, polygon: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Even-odd ray casting of (N, 2) points against an (M, 2) polygon, vectorised over points and
    edges. A point on the left or top edge counts as inside, on the right or bottom edge as outside."""
    pts = np.asarray(points, dtype=np.float64)
    poly = np.asarray(polygon, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ContractError(f"points must have shape (N, 2), got {pts.shape}")
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ContractError(f"polygon must have shape (M>=3, 2), got {poly.shape}")
    x, y = pts[:, 0:1], pts[:, 1:2]
    following = np.concatenate([poly[1:], poly[:1]])  # vertex i + 1, wrapping (np.roll, without its overhead)
    x1, y1 = poly[None, :, 0], poly[None, :, 1]
    x2, y2 = following[None, :, 0], following[None, :, 1]
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at_y = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    inside: npt.NDArray[np.bool_] = (np.sum(crosses & (x < x_at_y), axis=1) % 2) == 1
    return inside


def polygon_pixels(polygon: npt.ArrayLike, units: str, frame_wh: tuple[int, int] | None) -> npt.NDArray[np.float64]:
    """A zone polygon in pixels of a frame of size (width, height): `fraction` vertices are
    scaled by it, `pixels` vertices are taken as they are (pixels of the published frame)."""
    vertices = np.asarray(polygon, dtype=np.float64)
    if units == "pixels":
        return vertices
    if frame_wh is None:
        raise ContractError("a zone in fraction units needs the frame size")
    return vertices * np.array(frame_wh, dtype=np.float64)


def points_on_polygon_edge(
    points: npt.ArrayLike, polygon: npt.ArrayLike, tolerance: float = 1e-6
) -> npt.NDArray[np.bool_]:
    """(N,) True where a point lies on an edge (or a vertex) of the polygon, within `tolerance`
    pixels: what `points_in_polygon`'s half-open rule leaves out on the right and bottom edges."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    poly = np.asarray(polygon, dtype=np.float64)
    following = np.concatenate([poly[1:], poly[:1]])
    x, y = pts[:, 0:1], pts[:, 1:2]
    x1, y1 = poly[None, :, 0], poly[None, :, 1]
    dx, dy = following[None, :, 0] - x1, following[None, :, 1] - y1
    # The point of each edge nearest to each point: its projection, clamped to the segment.
    t = np.clip(((x - x1) * dx + (y - y1) * dy) / np.maximum(dx * dx + dy * dy, 1e-18), 0.0, 1.0)
    ex, ey = x1 + t * dx - x, y1 + t * dy - y
    on: npt.NDArray[np.bool_] = np.any((ex * ex + ey * ey) <= tolerance * tolerance, axis=1)
    return on


def _orientation(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64], r: npt.NDArray[np.float64]) -> Any:
    """Sign of the cross product (q - p) x (r - p), broadcast: 1 left turn, -1 right turn, 0 collinear."""
    cross = (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])
    return np.sign(cross)


def _on_segment(p: npt.NDArray[np.float64], q: npt.NDArray[np.float64], r: npt.NDArray[np.float64]) -> Any:
    """For collinear p, q, r: whether r lies within the bounding box of segment p-q."""
    return (
        (np.minimum(p[..., 0], q[..., 0]) <= r[..., 0])
        & (r[..., 0] <= np.maximum(p[..., 0], q[..., 0]))
        & (np.minimum(p[..., 1], q[..., 1]) <= r[..., 1])
        & (r[..., 1] <= np.maximum(p[..., 1], q[..., 1]))
    )


def polygon_self_intersection(polygon: npt.ArrayLike) -> tuple[int, int] | None:
    """The first pair of edges (i, j), edge i running from vertex i to vertex i+1, that cross or
    touch although they are not neighbours, or neighbours that fold back onto each other (or
    meet at a repeated vertex); None for a simple polygon."""
    poly = np.asarray(polygon, dtype=np.float64)
    n = len(poly)
    start, end = poly, np.roll(poly, -1, axis=0)
    i, j = np.triu_indices(n, k=1)
    neighbours = (j == i + 1) | ((i == 0) & (j == n - 1))
    a1, a2, b1, b2 = start[i], end[i], start[j], end[j]
    o1, o2 = _orientation(a1, a2, b1), _orientation(a1, a2, b2)
    o3, o4 = _orientation(b1, b2, a1), _orientation(b1, b2, a2)
    proper = (o1 * o2 < 0) & (o3 * o4 < 0)
    touching = (
        ((o1 == 0) & _on_segment(a1, a2, b1))
        | ((o2 == 0) & _on_segment(a1, a2, b2))
        | ((o3 == 0) & _on_segment(b1, b2, a1))
        | ((o4 == 0) & _on_segment(b1, b2, a2))
    )
    # Neighbours share one vertex; they are wrong only when one has no length (a repeated vertex)
    # or the second runs back along the first (a spike).
    zero = np.all(a1 == a2, axis=1) | np.all(b1 == b2, axis=1)
    backwards = (o1 == 0) & (o2 == 0) & (np.sum((a2 - a1) * (b2 - b1), axis=1) < 0)
    bad = np.flatnonzero(np.where(neighbours, zero | backwards, proper | touching))
    if len(bad) == 0:
        return None
    return int(i[bad[0]]), int(j[bad[0]])
