"""Polygon zones: which boxes have their anchor point inside a camera's named area."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from vigil.config import ZoneConfig
from vigil.detections import Detections
from vigil.errors import ContractError
from vigil.geometry import points_in_polygon, polygon_pixels

Anchor = Literal["bottom_center", "center"]


class PolygonZone:
    """`zone.trigger(detections) -> bool mask`: True where the box's anchor lies in the polygon.

    Vertices in `fraction` units are scaled by the frame size given to `trigger` (frames may be
    downscaled by ingest, so the same zone works at any resolution). The geometry is
    `vigil.geometry`'s, the same the evaluation scores zones with.
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
        if self.units == "fraction" and frame_wh is None:
            raise ContractError(f"zone {self.name!r} uses fraction units: trigger() needs frame_wh=(width, height)")
        return polygon_pixels(self.polygon, self.units, frame_wh)

    def trigger(self, detections: Detections, frame_wh: tuple[int, int] | None = None) -> npt.NDArray[np.bool_]:
        if len(detections) == 0:
            return np.zeros(0, bool)
        return points_in_polygon(detections.anchors(self.anchor), self.vertices(frame_wh))
