"""False-positive controls of the alerts stage (Frigate's `objects`): per-class object filters and
object masks before tracking, and a track's score history after it.

Before tracking, so that a filtered box never starts or extends a track:

* `ObjectFilters.apply(dets, frame_wh) -> dets` drops boxes outside their class's `min_score`,
  `min_area` / `max_area` (pixels of the published frame if > 1, else a fraction of its area),
  `min_ratio` / `max_ratio` (width / height);
* `ObjectMask.trigger(dets, frame_wh) -> mask` is True where a box's anchor lies inside the
  polygon or on its edge (a mask drawn to the frame's border covers a box standing on it);
* `Prefilter` runs both and counts every removed box by its reason: the filter (`min_area`, ...)
  or `mask:<name>`, the first that removed it in that order.

After tracking, `ScoreHistory.update(tracked) -> tracked` adds, per row, the median of the track's
last `score_window` scores (`data["track_score"]`, padded with zeros to three scores as Frigate
does, so a single confident frame never reaches a threshold) and whether the track has reached its
class's `threshold` (`data["true_positive"]`). A track that has reached it once stays a true
positive, so a person who turns away for a few frames does not stop counting. Rules count only
true-positive rows (`alerts.rules`); the history starts with the first frame the tracker confirms.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from typing import Literal

import numpy as np
import numpy.typing as npt

from alerts.zones import PolygonZone
from vigil.config import CameraObjectsConfig, ObjectFilterConfig, ObjectMaskConfig
from vigil.detections import Detections
from vigil.geometry import points_in_polygon, points_on_polygon_edge

# Order of the checks: a box that fails several is counted under the first.
FILTER_REASONS = ("min_score", "min_area", "max_area", "min_ratio", "max_ratio")
NO_FILTER = ObjectFilterConfig()
# Half a thousandth of a pixel: anchors are float32, so a border at 480 may come back as 479.99997.
EDGE_TOLERANCE = 5e-4
# Frigate pads a short score history with zeros to this many values before taking the median.
PADDED_TO = 3


def class_names(dets: Detections) -> npt.NDArray[np.object_]:
    names = dets.data.get("class_name")
    return names if names is not None else np.full(len(dets), "", object)


def _area_pixels(value: float, frame_area: float) -> float:
    """An area limit in pixels: values above 1 are pixels already, others a fraction of the frame."""
    return value if value > 1 else value * frame_area


class ObjectFilters:
    """`filters.apply(dets, frame_wh) -> dets`: per-class limits on score, area and aspect ratio."""

    def __init__(self, objects: CameraObjectsConfig) -> None:
        self.objects = objects
        self.enabled = any(f.active() for f in objects.filters.values())

    def for_class(self, name: str) -> ObjectFilterConfig:
        return self.objects.filter_for(name) or NO_FILTER

    def reasons(self, dets: Detections, frame_wh: tuple[int, int]) -> npt.NDArray[np.object_]:
        """(N,) the first filter each row fails ("" where it passes)."""
        out = np.full(len(dets), "", object)
        if not self.enabled or len(dets) == 0:
            return out
        names = class_names(dets)
        frame_area = float(frame_wh[0]) * float(frame_wh[1])
        w = np.maximum(dets.xyxy[:, 2] - dets.xyxy[:, 0], 0).astype(np.float64)
        h = np.maximum(dets.xyxy[:, 3] - dets.xyxy[:, 1], 0).astype(np.float64)
        area = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(h > 0, w / np.where(h > 0, h, 1), np.inf)
        for name in set(names.tolist()):
            f = self.for_class(str(name))
            rows = names == name
            failed = (
                ("min_score", dets.confidence < f.min_score),
                ("min_area", area < _area_pixels(f.min_area, frame_area)),
                ("max_area", area > _area_pixels(f.max_area, frame_area) if f.max_area is not None else None),
                ("min_ratio", ratio < f.min_ratio),
                ("max_ratio", ratio > f.max_ratio if f.max_ratio is not None else None),
            )
            for reason, mask in failed:
                if mask is not None:
                    out[rows & mask & (out == "")] = reason
        return out

    def apply(self, dets: Detections, frame_wh: tuple[int, int]) -> Detections:
        return dets[self.reasons(dets, frame_wh) == ""]


class ObjectMask(PolygonZone):
    """`mask.trigger(dets, frame_wh) -> bool mask`: True where the row is of a class the mask drops
    and its anchor is inside the polygon or on its edge."""

    def __init__(
        self,
        name: str,
        polygon: npt.ArrayLike,
        units: Literal["pixels", "fraction"] = "pixels",
        anchor: Literal["bottom_center", "center"] = "bottom_center",
        classes: Iterable[str] = (),
    ) -> None:
        super().__init__(name, polygon, units, anchor)
        self.classes = frozenset(classes)

    @classmethod
    def from_mask(cls, config: ObjectMaskConfig) -> ObjectMask:
        return cls(config.name, config.polygon, config.units, config.anchor, config.classes)

    def trigger(self, detections: Detections, frame_wh: tuple[int, int] | None = None) -> npt.NDArray[np.bool_]:
        if len(detections) == 0:
            return np.zeros(0, bool)
        n = len(detections)
        # A set lookup per row: np.isin on object arrays costs more than the rest of the test.
        names = class_names(detections)
        of_class = np.fromiter((c in self.classes for c in names), bool, n) if self.classes else np.ones(n, bool)
        if not of_class.any():
            return of_class
        anchors = detections.anchors(self.anchor).astype(np.float64)
        vertices = self.vertices(frame_wh)
        # Only anchors within the polygon's bounding box can be in it or on it (most, for a small mask, are not).
        low, high = vertices.min(axis=0) - EDGE_TOLERANCE, vertices.max(axis=0) + EDGE_TOLERANCE
        near = of_class & np.all((anchors >= low) & (anchors <= high), axis=1)
        result = np.zeros(n, bool)
        if near.any():
            points = anchors[near]
            result[near] = points_in_polygon(points, vertices) | points_on_polygon_edge(
                points, vertices, EDGE_TOLERANCE
            )
        return result


class Prefilter:
    """Object filters, then object masks, with a count of what each removed (`removed`, cumulative;
    `pending`, what the aggregator has not turned into metrics yet)."""

    def __init__(self, objects: CameraObjectsConfig) -> None:
        self.filters = ObjectFilters(objects)
        self.masks = [ObjectMask.from_mask(m) for m in objects.masks]
        self.removed: Counter[str] = Counter()
        self.pending: Counter[str] = Counter()

    @property
    def enabled(self) -> bool:
        return self.filters.enabled or bool(self.masks)

    def reasons(self, dets: Detections, frame_wh: tuple[int, int]) -> npt.NDArray[np.object_]:
        """(N,) why each row is removed: a filter's name or `mask:<name>`; "" for rows that stay."""
        out = self.filters.reasons(dets, frame_wh)
        for mask in self.masks:
            left = out == ""
            if not left.any():
                break
            out[left & mask.trigger(dets, frame_wh)] = f"mask:{mask.name}"
        return out

    def apply(self, dets: Detections, frame_wh: tuple[int, int]) -> tuple[Detections, npt.NDArray[np.object_]]:
        """(the rows that stay, why each row of `dets` was removed)."""
        if not self.enabled or len(dets) == 0:
            return dets, np.full(len(dets), "", object)
        reasons = self.reasons(dets, frame_wh)
        dropped = reasons[reasons != ""].tolist()
        if dropped:
            counts = Counter(dropped)
            self.removed.update(counts)
            self.pending.update(counts)
        return dets[reasons == ""], reasons

    def take_pending(self) -> Counter[str]:
        pending, self.pending = self.pending, Counter()
        return pending


def padded_median(scores: Iterable[float], pad: int) -> float:
    """Median of `scores` padded with zeros to at least `pad` values (plain Python: a handful of
    values per track and frame, where numpy's per-call overhead would dominate)."""
    values = sorted(scores)
    values = [0.0] * (pad - len(values)) + values
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2


class ScoreHistory:
    """`history.update(tracked, live) -> tracked` with `data["track_score"]` and `data["true_positive"]`
    (see the module docstring). `live`: the ids the tracker still holds; others are forgotten."""

    def __init__(self, objects: CameraObjectsConfig) -> None:
        self.objects = objects
        self.window = objects.score_window or 1
        self.pad = min(PADDED_TO, self.window)
        self.scores: dict[int, deque[float]] = {}
        self.positive: set[int] = set()
        # Without any threshold every track counts at once: the engine skips `update` then.
        self.enabled = any(f.threshold > 0 for f in objects.filters.values())

    def threshold(self, class_name: str) -> float:
        f = self.objects.filter_for(class_name)
        return f.threshold if f is not None else 0.0

    def update(self, tracked: Detections, live: Iterable[int] | None = None) -> Detections:
        n = len(tracked)
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.full(n, -1, np.int64)
        names = class_names(tracked)
        medians = np.zeros(n, np.float32)
        positive = np.zeros(n, bool)
        for row, (tid, score, name) in enumerate(zip(ids.tolist(), tracked.confidence.tolist(), names, strict=True)):
            history = self.scores.get(tid)
            if history is None:
                history = self.scores[tid] = deque(maxlen=self.window)
            history.append(score)
            medians[row] = padded_median(history, self.pad)
            if tid in self.positive or medians[row] >= self.threshold(str(name)):
                self.positive.add(tid)
                positive[row] = True
        if live is not None:
            keep = set(live)
            for tid in [t for t in self.scores if t not in keep]:
                del self.scores[tid]
                self.positive.discard(tid)
        data = dict(tracked.data, track_score=medians, true_positive=positive)
        return Detections(tracked.xyxy, tracked.confidence, tracked.class_id, tracked.tracker_id, data)
