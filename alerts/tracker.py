"""Multi-object tracker: ByteTrack's two-stage association on Kalman-predicted boxes, with OC-SORT's
observation-centric additions, all in capture time.

Per frame, every track's box is predicted to the frame's capture time (`alerts.kalman`: constant
velocity in pixels per second, so 5 fps and 25 fps see the same motion), then detections are
associated in three stages, each an optimal assignment (`scipy.optimize.linear_sum_assignment`)
that rejects pairs with an IoU below `match_iou` or of a different class:

1. detections with confidence >= `high_threshold` against every live track (Zhang et al., ByteTrack,
   ECCV 2022);
2. detections between `low_threshold` and `high_threshold` against the confirmed tracks stage 1 left
   unmatched, so a briefly occluded (low-score) person keeps their identity, while low-score boxes
   never start a track of their own;
3. confirmed tracks still unmatched against the confident detections still unmatched, by the box each
   track was last *seen* at rather than predicted at (Cao et al., OC-SORT, CVPR 2023, "observation-
   centric recovery"): an object that stopped behind an occluder is found where it was lost.

The IoU of stages 1 and 2 is taken on both boxes padded by `GATE_SIGMAS` standard deviations of how
far the track's velocity uncertainty lets it stray in this frame interval: nothing for a settled
track at 25 fps, enough at 5 fps for a new track (whose velocity is not known yet) to follow a walker
whose boxes no longer overlap from one frame to the next. The assignment also prefers detections in
the direction a moving track is heading (OC-SORT's "observation-centric momentum", weight
`DIRECTION_WEIGHT`), which keeps two people apart where they cross.

When a confirmed track is matched again after missed frames, its filter is re-run from the last
observation through virtual observations on the straight line to the new one, one per missed frame
(OC-SORT's "observation-centric re-update"), so the velocity it coasted on does not linger.

A track is *tentative* until it has been matched in `min_hits` consecutive frames; a tentative track
that misses a frame is dropped. A confident detection matched to no track starts a tentative track
when its confidence is at least `new_track_threshold` (by default `high_threshold`). A confirmed track survives `lost_after_s` of
capture time without a match (the lost-track buffer: it is still predicted and can be matched), so
replaying a recording fast gives the same identities as watching it live. Identities count from 1
in the order tracks are confirmed.

`update()` returns only rows matched to confirmed tracks, with `tracker_id` set. Unconfirmed rows
are dropped rather than returned with -1, so no caller can count a tentative track as an object
(the bug in supervision #2578).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from alerts.kalman import BoxFilter
from vigil.config import TrackerConfig
from vigil.detections import Detections

NS = 1_000_000_000
Array = npt.NDArray[np.float64]

# Pad boxes by this many standard deviations of the frame interval's velocity uncertainty.
GATE_SIGMAS = 2.0
# OC-SORT's momentum term: up to +-0.1 on the IoU for a detection straight ahead of / behind a track
# moving at least DIRECTION_MIN_SPEED box heights per second, displaced at least DIRECTION_MIN_STEP.
DIRECTION_WEIGHT = 0.1
DIRECTION_MIN_SPEED = 0.3
DIRECTION_MIN_STEP = 0.02


@dataclass
class Track:
    """One object's bookkeeping; its motion is row i of the tracker's `BoxFilter` (i = its index in
    `tracker.tracks`). `box` is where it was last seen, `missed_ns` the capture times of the frames it
    has missed since."""

    track_id: int
    box: npt.NDArray[np.float32]
    class_id: int
    confidence: float
    hits: int
    last_ns: int
    first_ns: int
    confirmed: bool = False
    missed_ns: list[int] = field(default_factory=list)


def _select(detections: Detections, rows: npt.NDArray[np.bool_], ids: npt.NDArray[np.int64]) -> Detections:
    """The rows of `detections` with their tracker ids (one construction: this runs every frame)."""
    return Detections(
        xyxy=detections.xyxy[rows],
        confidence=detections.confidence[rows],
        class_id=detections.class_id[rows],
        tracker_id=ids,
        data={key: value[rows] for key, value in detections.data.items()},
    )


def padded_iou(a: Array, b: Array, pad: Array) -> Array:
    """IoU (len(a), len(b)) of xyxy boxes after padding box a[i] and every b by pad[i] = (px, py)
    on each side. With zero padding this is the plain IoU."""
    pad2 = 2 * pad[:, None, :]
    wh = np.minimum(a[:, None, 2:], b[None, :, 2:]) - np.maximum(a[:, None, :2], b[None, :, :2]) + pad2
    np.maximum(wh, 0.0, out=wh)
    inter = wh[..., 0] * wh[..., 1]
    size_a = a[:, None, 2:] - a[:, None, :2] + pad2
    size_b = b[None, :, 2:] - b[None, :, :2] + pad2
    union = size_a[..., 0] * size_a[..., 1] + size_b[..., 0] * size_b[..., 1] - inter
    iou: Array = inter / np.maximum(union, 1e-9)
    return iou


class ByteTracker:
    """`tracker.update(detections, t_ns) -> detections` with `tracker_id`, confirmed tracks only.

    One tracker per camera; `t_ns` is the frame's capture time (not wall time). Frames must arrive
    in capture order; an older frame is ignored (returns no rows) rather than rewinding tracks.
    """

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.tracks: list[Track] = []
        self.filter = BoxFilter()
        self._next_id = 1
        self._last_ns: int | None = None

    @property
    def confirmed(self) -> list[Track]:
        return [t for t in self.tracks if t.confirmed]

    def reset(self) -> None:
        self.tracks.clear()
        self.filter = BoxFilter()
        self._next_id = 1
        self._last_ns = None

    def update(self, detections: Detections, t_ns: int) -> Detections:
        cfg = self.config
        if self._last_ns is not None and t_ns < self._last_ns:
            return _select(detections, np.zeros(len(detections), bool), np.empty(0, np.int64))
        dt = 0.0 if self._last_ns is None else (t_ns - self._last_ns) / NS
        self._last_ns = t_ns
        self.filter.predict(dt)
        predicted, pad = self.filter.boxes(), GATE_SIGMAS * np.sqrt(self.filter.p_vv[:, :2]) * dt
        xyxy, conf = detections.xyxy.astype(np.float64), detections.confidence
        high = np.flatnonzero(conf >= cfg.high_threshold)
        low = np.flatnonzero((conf >= cfg.low_threshold) & (conf < cfg.high_threshold))
        classes = np.array([t.class_id for t in self.tracks], np.int64)
        confirmed = np.array([t.confirmed for t in self.tracks], bool)

        # Stage 1: confident boxes against every live track, at their predicted boxes.
        matches = self._match(np.arange(len(self.tracks)), predicted, pad, classes, detections, xyxy, high)
        # Stage 2: low-score boxes only extend confirmed tracks that stage 1 left unmatched.
        left = np.array([i for i in np.flatnonzero(confirmed) if i not in matches], np.intp)
        matches.update(self._match(left, predicted[left], pad[left], classes[left], detections, xyxy, low))
        # Stage 3: confirmed tracks still unmatched, at the box they were last seen at.
        left = np.array([i for i in left if i not in matches], np.intp)
        taken = set(matches.values())
        rest = np.array([r for r in high if r not in taken], np.intp)
        seen = self.filter.seen[left]
        matches.update(self._match(left, seen, np.zeros((len(left), 2)), classes[left], detections, xyxy, rest))

        assigned = np.full(len(detections), -1, np.int64)
        self._correct(matches, detections, t_ns)
        for i, row in matches.items():
            track = self.tracks[i]
            track.hits += 1
            if not track.confirmed and track.hits >= cfg.min_hits:
                track.confirmed, track.track_id = True, self._new_id()
            if track.confirmed:
                assigned[row] = track.track_id

        # Tentative tracks must be matched every frame; confirmed ones live until lost_after_s.
        lost_ns = int(cfg.lost_after_s * NS)
        keep = np.zeros(len(self.tracks), bool)
        for i, track in enumerate(self.tracks):
            if i in matches:
                keep[i] = True
            elif track.confirmed and t_ns - track.last_ns < lost_ns:
                keep[i] = True
                track.missed_ns.append(t_ns)
        self.tracks = [t for t, k in zip(self.tracks, keep, strict=True) if k]
        self.filter.keep(keep)

        # Unmatched confident boxes start tentative tracks (confirmed at once when min_hits == 1).
        taken = set(matches.values())
        fresh = [int(r) for r in high if r not in taken and conf[r] >= cfg.start_threshold]
        self.filter.add(xyxy[fresh])
        for row in fresh:
            track = Track(
                0, detections.xyxy[row].copy(), int(detections.class_id[row]), float(conf[row]), 1, t_ns, t_ns
            )
            self.tracks.append(track)
            if cfg.min_hits <= 1:
                track.confirmed, track.track_id = True, self._new_id()
                assigned[row] = track.track_id

        kept = assigned >= 0
        return _select(detections, kept, assigned[kept])

    def _match(
        self,
        rows: npt.NDArray[np.intp],
        boxes: Array,
        pad: Array,
        classes: npt.NDArray[np.int64],
        detections: Detections,
        xyxy: Array,
        candidates: npt.NDArray[np.intp],
    ) -> dict[int, int]:
        """{track index: detection row} among tracks `rows` (at `boxes`, padded by `pad`, of `classes`)
        and detection rows `candidates`: the assignment maximising IoU plus the momentum term,
        keeping pairs of one class with an IoU of at least match_iou."""
        if len(rows) == 0 or len(candidates) == 0:
            return {}
        dets = xyxy[candidates]
        iou = padded_iou(boxes, dets, pad)
        iou[classes[:, None] != detections.class_id[candidates][None, :]] = 0.0
        r, c = linear_sum_assignment(-(iou + self._momentum(rows, dets)))
        ok = iou[r, c] >= self.config.match_iou
        return dict(zip(rows[r[ok]].tolist(), candidates[c[ok]].tolist(), strict=True))

    def _momentum(self, rows: npt.NDArray[np.intp], dets: Array) -> Array | float:
        """DIRECTION_WEIGHT x the cosine between a moving track's velocity and its step from where it
        was last seen to each detection (0 for tracks at rest, and for detections right on it)."""
        vel, height = self.filter.vel[rows, :2], np.maximum(self.filter.pos[rows, 3:4], 1.0)
        speed = np.hypot(vel[:, 0:1], vel[:, 1:2])
        moving = speed >= DIRECTION_MIN_SPEED * height
        if not moving.any():
            return 0.0
        seen = self.filter.seen[rows]
        step = ((dets[None, :, :2] + dets[None, :, 2:]) - (seen[:, None, :2] + seen[:, None, 2:])) / 2
        length = np.hypot(step[..., 0], step[..., 1])
        cos = (step[..., 0] * vel[:, 0:1] + step[..., 1] * vel[:, 1:2]) / np.maximum(length * speed, 1e-9)
        counts = moving & (length >= DIRECTION_MIN_STEP * height)
        term: Array = DIRECTION_WEIGHT * np.where(counts, cos, 0.0)
        return term

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def _correct(self, matches: dict[int, int], detections: Detections, t_ns: int) -> None:
        """Kalman-correct the matched tracks, re-updating those that had missed frames (OC-SORT)."""
        if not matches:
            return
        for i, row in matches.items():
            track = self.tracks[i]
            if track.missed_ns:
                self.filter.reupdate(i, track.last_ns, track.missed_ns, detections.xyxy[row], t_ns)
        rows = np.fromiter(matches.keys(), np.intp, len(matches))
        self.filter.update(rows, detections.xyxy[np.fromiter(matches.values(), np.intp, len(matches))])
        for i, row in matches.items():
            track = self.tracks[i]
            track.box = detections.xyxy[row].copy()
            track.confidence = float(detections.confidence[row])
            track.last_ns = t_ns
            track.missed_ns = []
