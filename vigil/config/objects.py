"""`objects` sections: per-class object filters, a track's score history, object masks.

The global `objects` section holds the defaults of every camera; `cameras[].objects` merges over it
class by class (a class the camera lists takes the camera's entry whole, `default` being one more
entry) and adds the camera's masks. `camera_objects(global, camera)` gives the merged section.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from vigil.config.areas import PolygonArea, names_unique
from vigil.config.base import NAME_PATTERN, FieldError, Section

DEFAULT_CLASS = "default"
# Box areas up to this many pixels (a 16K frame); values <= 1 are fractions of the frame.
MAX_AREA_PIXELS = 16384 * 16384


class ObjectFilterConfig(Section):
    """Limits a detection of one class must meet to be tracked at all, and the score its track must reach."""

    min_area: float = Field(
        0.0,
        ge=0.0,
        le=MAX_AREA_PIXELS,
        title="Smallest box area: pixels of the published frame if > 1, else a fraction of the frame's area",
    )
    max_area: float | None = Field(
        None,
        gt=0.0,
        le=MAX_AREA_PIXELS,
        title="Largest box area: pixels of the published frame if > 1, else a fraction of the frame's area; "
        "none: no limit",
    )
    min_ratio: float = Field(0.0, ge=0.0, le=100.0, title="Smallest box width / height")
    max_ratio: float | None = Field(None, gt=0.0, le=100.0, title="Largest box width / height; none: no limit")
    min_score: float = Field(
        0.0, ge=0.0, le=1.0, title="A detection below this confidence is dropped before tracking (never tracked)"
    )
    threshold: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        title="A track counts for rules once the median of its last score_window scores reaches this (then for good)",
    )

    @model_validator(mode="after")
    def _ranges(self) -> ObjectFilterConfig:
        # Areas compare only in the same unit: 0.01 (a fraction) and 4000 (pixels) need the frame size.
        if self.max_area is not None and (self.min_area > 1) == (self.max_area > 1) and self.min_area > self.max_area:
            raise FieldError("max_area", f"max_area {self.max_area:g} is below min_area {self.min_area:g}")
        if self.max_ratio is not None and self.min_ratio > self.max_ratio:
            raise FieldError("max_ratio", f"max_ratio {self.max_ratio:g} is below min_ratio {self.min_ratio:g}")
        return self

    def active(self) -> list[str]:
        """The limits that can remove something (a default value removes nothing)."""
        keys = [k for k in ("min_area", "min_ratio", "min_score", "threshold") if getattr(self, k) > 0]
        return keys + [k for k in ("max_area", "max_ratio") if getattr(self, k) is not None]


class ObjectMaskConfig(PolygonArea):
    """A polygon where detections are dropped before tracking (a statue, a poster, a parked car)."""

    name: str = Field(..., pattern=NAME_PATTERN, title="Mask name, unique among the camera's object masks")
    classes: list[str] = Field(
        default_factory=list, max_length=1000, title="Classes the mask drops; empty: every class"
    )
    anchor: Literal["bottom_center", "center"] = Field(
        "bottom_center", title="Point of the box tested against the polygon (on its edge counts as inside)"
    )


Filters = dict[str, ObjectFilterConfig]
_FILTERS_TITLE = "Per class name (or `default`, for every class without an entry of its own)"


def _no_masks(data: Any) -> Any:
    if isinstance(data, dict) and "masks" in data:
        raise FieldError("masks", "masks are drawn on one camera's picture: put them under cameras[].objects.masks")
    return data


class ObjectsConfig(Section):
    """Object filters and the score history for every camera (each camera's `objects` merges over it)."""

    filters: Filters = Field(default_factory=dict, max_length=1000, title=_FILTERS_TITLE)
    score_window: int = Field(
        5, ge=1, le=100, title="Frames of a track's recent scores whose median must reach `threshold`"
    )

    @model_validator(mode="before")
    @classmethod
    def _masks_are_per_camera(cls, data: Any) -> Any:
        return _no_masks(data)


class CameraObjectsConfig(Section):
    """A camera's object filters (merged over the global `objects`, class by class) and object masks."""

    filters: Filters = Field(default_factory=dict, max_length=1000, title=_FILTERS_TITLE)
    score_window: int | None = Field(None, ge=1, le=100, title="Score history length; none: the global one")
    masks: list[ObjectMaskConfig] = Field(
        default_factory=list, max_length=64, title="Object masks: detections whose anchor is inside are dropped"
    )

    @model_validator(mode="after")
    def _unique(self) -> CameraObjectsConfig:
        names_unique(list(self.masks), "masks", "object mask")
        return self

    def filter_for(self, class_name: str) -> ObjectFilterConfig | None:
        return self.filters.get(class_name) or self.filters.get(DEFAULT_CLASS)


def camera_objects(objects: ObjectsConfig, camera: CameraObjectsConfig) -> CameraObjectsConfig:
    """The camera's section with the global one merged under it: filters class by class (the
    camera's entry for a class replaces the global one whole), the camera's score_window if set."""
    return CameraObjectsConfig(
        filters={**objects.filters, **camera.filters},
        score_window=camera.score_window or objects.score_window,
        masks=camera.masks,
    )
