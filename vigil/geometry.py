"""Box and polygon geometry shared by the tracker, the zones and the evaluation, vectorised."""

from __future__ import annotations

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
    x1, y1 = poly[:, 0][None, :], poly[:, 1][None, :]
    x2, y2 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
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
