"""Still frames: which frames a worker runs through the model and which reuse the camera's last detections.

Frigate does not re-detect a stationary object until motion overlaps it. vigil's detector sees whole frames,
so the unit here is the frame: ingest's motion gate marks a frame in which nothing moved (`motion` header with
no box, not a keep-alive; `cameras[].motion.still_frames: publish`), and such a frame's objects are exactly
where the camera's previous frame had them. The worker then publishes the last detected frame's detections
for it (`DetectionsRecord.reused_from` names that frame) instead of decoding and inferring, so the
aggregator's tracks, dwell timers and open alerts go on as if the model had run.

Reuse needs an unbroken chain back to a frame this worker detected: the frame's `seq` must follow the
camera's previous frame seen here (a frame dropped by ingest's queue, skipped as stale, dead-lettered, fetched
twice or handled by another worker breaks it), in the same partition assignment, at the same size, and the
detected frame must be younger than `detect.stationary.redetect_s` of capture time. Anything else runs the
model. Pure logic: the worker feeds it frames in partition order.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.config import StationaryConfig
from vigil.contracts import FrameMeta


@dataclass(frozen=True)
class _Anchor:
    """The camera's last frame handled in order, and the last one sent to the model."""

    seq: int
    assignment: tuple[str, int, int]  # topic, partition, epoch of the partition's assignment
    size: tuple[int, int]
    detected_ns: int  # capture time of the last frame sent to the model


class StillFramePlanner:
    """`planner.reuse(meta, assignment) -> bool` per frame, in partition order; `broken(camera)` after a frame
    of that camera was neither detected nor reused (stale, refused, failed to decode)."""

    def __init__(self, config: StationaryConfig) -> None:
        self.enabled = config.enabled
        self.redetect_ns = int(config.redetect_s * 1e9)
        self._anchors: dict[str, _Anchor] = {}
        self.reused = 0
        self.detected = 0

    @staticmethod
    def is_still(meta: FrameMeta) -> bool:
        """Ingest saw no motion in this frame (and it is not a keep-alive, which asks for a fresh look)."""
        return meta.motion is not None and len(meta.motion) == 0 and not meta.keepalive

    def reuse(self, meta: FrameMeta, assignment: tuple[str, int, int]) -> bool:
        """True: publish the camera's last detections for this frame. False: run the model on it (and it
        becomes the camera's reference)."""
        anchor = self._anchors.get(meta.camera_id)
        size = (meta.width, meta.height)
        if (
            self.enabled
            and anchor is not None
            and self.is_still(meta)
            and meta.seq == anchor.seq + 1
            and anchor.assignment == assignment
            and anchor.size == size
            and 0 <= meta.capture_ns - anchor.detected_ns < self.redetect_ns
        ):
            self._anchors[meta.camera_id] = _Anchor(meta.seq, assignment, size, anchor.detected_ns)
            self.reused += 1
            return True
        self._anchors[meta.camera_id] = _Anchor(meta.seq, assignment, size, meta.capture_ns)
        self.detected += 1
        return False

    def broken(self, camera_id: str) -> None:
        """A frame of this camera was not accounted for: the next still frame runs the model."""
        self._anchors.pop(camera_id, None)
