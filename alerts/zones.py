"""Polygon zones: which boxes have their anchor point inside a camera's named area."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from vigil.config import ZoneConfig
from vigil.detections import Detections
from vigil.errors import ContractError

Anchor = Literal["bottom_center", "center"]


def points_in_polygon(points: npt.NDArray[np.float32], polygon: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    """Even-odd ray casting, vectorised over points. Points exactly on an edge may fall either way."""
    if points.ndim != 2 or points.shape[1] != 2:
        raise ContractError(f"points must have shape (N, 2), got {points.shape}")
    x = points[:, 0].astype(np.float64)[:, None]
    y = points[:, 1].astype(np.float64)[:, None]
    x1, y1 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    x2, y2 = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    crosses = (y1 > y) != (y2 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at_y = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
    inside: npt.NDArray[np.bool_] = (np.sum(crosses & (x < x_at_y), axis=1) % 2) == 1
    return inside


class PolygonZone:
    """`zone.trigger(detections) -> bool mask`: True where the box's anchor lies in the polygon.

    Vertices in `fraction` units are scaled by the frame size given to `trigger` (frames may be
    downscaled by ingest, so the same zone works at any resolution).
    """

    def __init__(
        self,
        name: str,
        polygon: npt.ArrayLike,
        units: Literal["pixels", "fraction"] = "pixels",
        anchor: Anchor = "bottom_center",
    ) -> None:
        vertices = np.asarray(polygon, dtype=np.float64)
        if vertices.ndim != 2 or vertices.shape[1] != 2 or len(vertices) < 3:
            raise ContractError(f"zone {name!r}: polygon must have shape (N>=3, 2), got {vertices.shape}")
        self.name = name
        self.polygon = vertices
        self.units = units
        self.anchor: Anchor = anchor

    @classmethod
    def from_config(cls, config: ZoneConfig, anchor: Anchor = "bottom_center") -> PolygonZone:
        return cls(config.name, config.polygon, config.units, anchor)

    def vertices(self, frame_wh: tuple[int, int] | None = None) -> npt.NDArray[np.float64]:
        """Polygon in pixels of a frame of size (width, height)."""
        if self.units == "pixels":
            return self.polygon
        if frame_wh is None:
            raise ContractError(f"zone {self.name!r} uses fraction units: trigger() needs frame_wh=(width, height)")
        scaled: npt.NDArray[np.float64] = self.polygon * np.asarray(frame_wh, dtype=np.float64)[None, :]
        return scaled

    def trigger(self, detections: Detections, frame_wh: tuple[int, int] | None = None) -> npt.NDArray[np.bool_]:
        if len(detections) == 0:
            return np.zeros(0, bool)
        return points_in_polygon(detections.anchors(self.anchor), self.vertices(frame_wh))
