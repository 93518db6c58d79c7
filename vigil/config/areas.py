"""Named polygons of a camera's picture: the shared base of zones, object masks and motion masks."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vigil.config.base import NAME_PATTERN, FieldError, Section
from vigil.geometry import polygon_self_intersection


class PolygonArea(Section):
    """A named polygon in pixels of the published frame or in fractions of it, validated once for
    every use: vertices in range, at least 3, a non-zero area, no edge crossing another."""

    name: str = Field(..., pattern=NAME_PATTERN, title="Name, unique per camera among its kind")
    polygon: list[tuple[float, float]] = Field(
        ..., min_length=3, max_length=256, title="Polygon vertices [[x, y], ...], at least 3"
    )
    units: Literal["pixels", "fraction"] = Field(
        "pixels",
        title="Vertices in pixels of the published frame (after max_width), or 0-1 fractions of the frame "
        "(fractions survive any resize)",
    )

    @model_validator(mode="after")
    def _polygon_valid(self) -> PolygonArea:
        xs = [p[0] for p in self.polygon]
        ys = [p[1] for p in self.polygon]
        if self.units == "fraction" and not all(0.0 <= v <= 1.0 for v in xs + ys):
            raise FieldError(
                "polygon", "with units: fraction every vertex must lie in 0..1; use units: pixels otherwise"
            )
        if any(v < 0 for v in xs + ys):
            raise FieldError("polygon", "polygon vertices must not be negative")
        # Shoelace area: a degenerate (collinear) polygon can never contain a point.
        area = 0.5 * abs(sum(xs[i] * ys[i - 1] - xs[i - 1] * ys[i] for i in range(len(self.polygon))))
        if area == 0:
            raise FieldError("polygon", "polygon has zero area (are the points collinear?)")
        crossing = polygon_self_intersection(self.polygon)
        if crossing is not None:
            first, second = crossing
            n = len(self.polygon)

            def edge(k: int) -> str:
                a, b = self.polygon[k], self.polygon[(k + 1) % n]
                return f"{k + 1}-{(k + 1) % n + 1} ({_point(a)} to {_point(b)})"

            raise FieldError(
                "polygon",
                f"polygon edges {edge(first)} and {edge(second)} cross or touch (points counted from 1): list the "
                "vertices in order around the area, without repeating one",
            )
        return self


def _point(p: tuple[float, float]) -> str:
    return f"[{p[0]:g}, {p[1]:g}]"


def pixel_polygons_within(areas: list[PolygonArea], max_width: int | None, key: str, what: str) -> None:
    """Pixel polygons must fit the published frame: with `max_width` set, no vertex right of it."""
    if max_width is None:
        return
    for index, area in enumerate(areas):
        if area.units == "pixels" and max(x for x, _ in area.polygon) > max_width:
            raise FieldError(
                (*key.split("."), index, "polygon"),
                f"{what} {area.name!r} has vertices right of max_width={max_width}: pixel {what}s are in pixels of "
                "the published (resized) frame; scale them, or use units: fraction",
            )


def names_unique(areas: list[PolygonArea], key: str, what: str) -> None:
    names = [a.name for a in areas]
    for index, name in enumerate(names):
        if names.index(name) != index:
            raise FieldError((*key.split("."), index, "name"), f"{what} name {name!r} is used twice on this camera")
