"""ByteTrack-style multi-object tracker: identities across frames from IoU matching alone.

Two-stage association per frame (Zhang et al., ByteTrack, 2022):

1. detections with confidence >= `high_threshold` are matched to every live track;
2. detections between `low_threshold` and `high_threshold` are matched only to confirmed tracks
   left unmatched by stage 1, so a briefly occluded (low-score) person keeps their identity,
   while low-score boxes never start a track of their own.

Matching solves the assignment problem on the IoU matrix with `scipy.optimize.linear_sum_assignment`
and rejects pairs below `match_iou` or of a different class. A track is *tentative* until it has
been matched in `min_hits` consecutive frames; a tentative track that misses a frame is dropped.
A confirmed track survives `lost_after_s` of capture time without a match, so replaying a recording
fast gives the same identities as watching it live.

`update()` returns only rows matched to confirmed tracks, with `tracker_id` set. Unconfirmed rows
are dropped rather than returned with -1, so no caller can count a tentative track as an object
(the bug in supervision #2578).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from vigil.config import TrackerConfig
from vigil.detections import Detections
from vigil.geometry import box_iou

NS = 1_000_000_000


def _with_ids(detections: Detections, ids: npt.NDArray[np.int64]) -> Detections:
    return Detections(
        xyxy=detections.xyxy,
        confidence=detections.confidence,
        class_id=detections.class_id,
        tracker_id=ids,
        data=detections.data,
    )


@dataclass
class Track:
    """One object's state. `velocity` is box-corner motion per second, smoothed, used to predict
    where the box will be at the next frame's capture time (matters at low sampling rates)."""

    track_id: int
    box: npt.NDArray[np.float32]
    class_id: int
    confidence: float
    hits: int
    last_ns: int
    first_ns: int
    confirmed: bool = False
    velocity: npt.NDArray[np.float32] | None = None

    def predict(self, t_ns: int) -> npt.NDArray[np.float32]:
        if self.velocity is None:
            return self.box
        dt = max(0.0, (t_ns - self.last_ns) / NS)
        predicted: npt.NDArray[np.float32] = (self.box + self.velocity * dt).astype(np.float32)
        return predicted

    def update(self, box: npt.NDArray[np.float32], confidence: float, t_ns: int) -> None:
        dt = (t_ns - self.last_ns) / NS
        if dt > 0:
            v = (box - self.box) / dt
            self.velocity = v if self.velocity is None else (0.5 * self.velocity + 0.5 * v).astype(np.float32)
        self.box = box.astype(np.float32)
        self.confidence = confidence
        self.last_ns = t_ns


class ByteTracker:
    """`tracker.update(detections, t_ns) -> detections` with `tracker_id`, confirmed tracks only.

    One tracker per camera; `t_ns` is the frame's capture time (not wall time). Frames must arrive
    in capture order; an older frame is ignored (returns no rows) rather than rewinding tracks.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last_ns: int | None = None

    @property
    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.confirmed]

    def reset(self) -> None:
        self.tracks.clear()
        self._next_id = 1
        self._last_ns = None

    def _match(
        self, tracks: list[Track], boxes: npt.NDArray[np.float32], classes: npt.NDArray[np.int32], t_ns: int
    ) -> list[tuple[int, int]]:
        """(track index, detection index) pairs with IoU >= match_iou and the same class."""
        if not tracks or len(boxes) == 0:
            return []
        predicted = np.stack([t.predict(t_ns) for t in tracks])
        iou = box_iou(predicted, boxes)
        same_class = np.array([t.class_id for t in tracks])[:, None] == classes[None, :]
        iou = np.where(same_class, iou, 0.0)
        rows, cols = linear_sum_assignment(-iou)
        return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= self.config.match_iou]

    def update(self, detections: Detections, t_ns: int) -> Detections:
        cfg = self.config
        if self._last_ns is not None and t_ns < self._last_ns:
            return _with_ids(detections[np.zeros(len(detections), bool)], np.empty(0, np.int64))
        self._last_ns = t_ns
        conf = detections.confidence
        high = np.flatnonzero(conf >= cfg.high_threshold)
        low = np.flatnonzero((conf >= cfg.low_threshold) & (conf < cfg.high_threshold))
        assigned = np.full(len(detections), -1, np.int64)

        # Stage 1: confident boxes against every live track.
        pairs = self._match(self.tracks, detections.xyxy[high], detections.class_id[high], t_ns)
        matched_tracks = {ti for ti, _ in pairs}
        matched_high = {di for _, di in pairs}
        for ti, di in pairs:
            self._extend(self.tracks[ti], detections, int(high[di]), t_ns, assigned)

        # Stage 2: low-score boxes only extend confirmed tracks that stage 1 left unmatched.
        leftover = [i for i, t in enumerate(self.tracks) if i not in matched_tracks and t.confirmed]
        pairs = self._match([self.tracks[i] for i in leftover], detections.xyxy[low], detections.class_id[low], t_ns)
        for ti, di in pairs:
            matched_tracks.add(leftover[ti])
            self._extend(self.tracks[leftover[ti]], detections, int(low[di]), t_ns, assigned)

        # Tentative tracks must be matched every frame; confirmed ones live until lost_after_s.
        lost_ns = int(cfg.lost_after_s * NS)
        self.tracks = [
            t for i, t in enumerate(self.tracks) if i in matched_tracks or (t.confirmed and t_ns - t.last_ns < lost_ns)
        ]

        # Unmatched confident boxes start tentative tracks (confirmed at once when min_hits == 1).
        for di in range(len(high)):
            if di in matched_high:
                continue
            row = int(high[di])
            track = Track(
                track_id=self._next_id,
                box=detections.xyxy[row].copy(),
                class_id=int(detections.class_id[row]),
                confidence=float(conf[row]),
                hits=1,
                last_ns=t_ns,
                first_ns=t_ns,
                confirmed=cfg.min_hits <= 1,
            )
            self._next_id += 1
            self.tracks.append(track)
            if track.confirmed:
                assigned[row] = track.track_id

        keep = assigned >= 0
        return _with_ids(detections[keep], assigned[keep])

    def _extend(
        self, track: Track, detections: Detections, row: int, t_ns: int, assigned: npt.NDArray[np.int64]
    ) -> None:
        track.update(detections.xyxy[row], float(detections.confidence[row]), t_ns)
        track.hits += 1
        if not track.confirmed and track.hits >= self.config.min_hits:
            track.confirmed = True
        if track.confirmed:
            assigned[row] = track.track_id
