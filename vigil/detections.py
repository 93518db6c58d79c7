"""`Detections`: the one in-memory form of boxes that flows between stages.

Parallel numpy arrays, one row per box, in the style of supervision's `sv.Detections`:
`xyxy` (N, 4) float32 in source-image pixels, `confidence` (N,) float32, `class_id` (N,) int32,
and an optional `tracker_id` (N,) int64 that the alert tracker fills in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.errors import ContractError

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
TrackArray = npt.NDArray[np.int64]


def _as(name: str, value: Any, dtype: type[np.generic], ndim: int) -> Any:
    array = np.asarray(value, dtype=dtype)
    if array.ndim != ndim:
        raise ContractError(f"Detections.{name} must have {ndim} dimension(s), got shape {array.shape}")
    return array


@dataclass(eq=False)
class Detections:
    """Boxes of one frame. All arrays have the same length N; shapes are checked on construction."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    tracker_id: TrackArray | None = None
    data: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ContractError(f"Detections.xyxy must have shape (N, 4), got {xyxy.shape}")
        self.xyxy = xyxy
        n = self.xyxy.shape[0]
        self.confidence = _as("confidence", self.confidence, np.float32, 1)
        self.class_id = _as("class_id", self.class_id, np.int32, 1)
        if self.tracker_id is not None:
            self.tracker_id = _as("tracker_id", self.tracker_id, np.int64, 1)
        for name in ("confidence", "class_id", "tracker_id"):
            array = getattr(self, name)
            if array is not None and array.shape[0] != n:
                raise ContractError(
                    f"Detections.{name} has shape {array.shape} but xyxy has {n} rows; arrays must be parallel"
                )
        for key, array in self.data.items():
            if len(array) != n:
                raise ContractError(f"Detections.data[{key!r}] has {len(array)} rows but xyxy has {n}")

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            xyxy=np.empty((0, 4), np.float32),
            confidence=np.empty((0,), np.float32),
            class_id=np.empty((0,), np.int32),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: npt.NDArray[np.bool_] | npt.NDArray[np.integer[Any]] | slice) -> Detections:
        """Select rows by boolean mask, index array or slice, keeping the arrays parallel."""
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
            data={key: value[index] for key, value in self.data.items()},
        )

    @classmethod
    def merge(cls, parts: Sequence[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        tracked = [p.tracker_id is not None for p in parts]
        if any(tracked) and not all(tracked):
            raise ContractError("cannot merge Detections where only some have tracker_id")
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            confidence=np.concatenate([p.confidence for p in parts]),
            class_id=np.concatenate([p.class_id for p in parts]),
            tracker_id=np.concatenate([p.tracker_id for p in parts if p.tracker_id is not None])
            if all(tracked)
            else None,
        )

    def anchors(self, anchor: str = "bottom_center") -> FloatArray:
        """(N, 2) anchor points of the boxes: `bottom_center` (default, feet on the ground) or `center`."""
        x1, y1, x2, y2 = self.xyxy.T
        cx = (x1 + x2) / 2
        if anchor == "bottom_center":
            return np.stack([cx, y2], axis=1).astype(np.float32)
        if anchor == "center":
            return np.stack([cx, (y1 + y2) / 2], axis=1).astype(np.float32)
        raise ValueError(f"unknown anchor {anchor!r}; use 'bottom_center' or 'center'")

    def area(self) -> FloatArray:
        w = np.maximum(self.xyxy[:, 2] - self.xyxy[:, 0], np.float32(0))
        h = np.maximum(self.xyxy[:, 3] - self.xyxy[:, 1], np.float32(0))
        area: FloatArray = (w * h).astype(np.float32)
        return area
