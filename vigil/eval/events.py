"""Alert-level scoring: which ground-truth tracks should have raised an alert under a zone rule,
and how the alerts the pipeline fired compare (event recall, false alerts per hour)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from vigil.config import RuleConfig, ZoneConfig
from vigil.eval.groundtruth import GroundTruth
from vigil.geometry import box_iou, points_in_polygon, polygon_pixels


def zone_polygon(zone: ZoneConfig | None, width: int, height: int) -> npt.NDArray[np.float64]:
    if zone is None:
        return np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float64)
    return polygon_pixels(zone.polygon, zone.units, (width, height))


@dataclass(frozen=True)
class GtEvent:
    track_id: int
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class FiredAlert:
    alert_id: str
    start_frame: int
    box: tuple[float, float, float, float]
    end_frame: int | None = None


@dataclass
class EventScores:
    gt_events: list[GtEvent]
    alerts: list[FiredAlert]
    matched: list[tuple[GtEvent, FiredAlert]] = field(default_factory=list)
    footage_s: float = 0.0

    @property
    def event_recall(self) -> float:
        return len({m[0] for m in self.matched}) / len(self.gt_events) if self.gt_events else 1.0

    @property
    def false_alerts(self) -> int:
        return len(self.alerts) - len({m[1].alert_id for m in self.matched})

    @property
    def false_alerts_per_hour(self) -> float:
        return self.false_alerts / (self.footage_s / 3600) if self.footage_s else 0.0


def ground_truth_events(gt: GroundTruth, zone: ZoneConfig | None, rule: RuleConfig, fps: float) -> list[GtEvent]:
    """Apply the rule's zone, consecutive-frames, dwell and end conditions to the labelled tracks.

    This is the reference definition, on perfect boxes and identities: an alert for a track is due
    once its anchor has been inside the zone for `min_frames` consecutive frames and `min_dwell_s`;
    it ends when the track has been outside or absent for `end_after_s`."""
    if gt.width is None or gt.height is None:
        raise ValueError("ground truth needs the image size (seqinfo.ini or COCO image width/height)")
    polygon = zone_polygon(zone, gt.width, gt.height)
    presence: dict[int, dict[int, bool]] = {}
    for frame in gt.frame_numbers:
        boxes = gt.boxes(frame)
        if len(boxes) == 0 or boxes.tracker_id is None:
            continue
        keep = ~boxes.data["ignore"]
        boxes = boxes[keep]
        if boxes.tracker_id is None:
            continue
        in_zone = points_in_polygon(boxes.anchors(rule.anchor), polygon)
        for track, flag in zip(boxes.tracker_id.tolist(), in_zone.tolist(), strict=True):
            presence.setdefault(track, {})[frame] = flag
    end_frames = max(1, round(rule.end_after_s * fps))
    events: list[GtEvent] = []
    for track, frames in sorted(presence.items()):
        run = 0
        run_start = None
        active_start: int | None = None
        outside_since: int | None = None
        for frame in range(min(frames), max(frames) + end_frames + 1):
            if frames.get(frame, False):
                run = run + 1
                run_start = frame if run == 1 else run_start
                outside_since = None
                dwell = (frame - (run_start or frame)) / fps
                if active_start is None and run >= rule.min_frames and dwell >= rule.min_dwell_s:
                    active_start = frame
            else:
                run = 0
                outside_since = frame if outside_since is None else outside_since
                if active_start is not None and frame - outside_since + 1 >= end_frames:
                    events.append(GtEvent(track, active_start, outside_since - 1))
                    active_start = None
        if active_start is not None:
            events.append(GtEvent(track, active_start, max(frames)))
    return events


def match_events(
    gt: GroundTruth,
    gt_events: list[GtEvent],
    alerts: list[FiredAlert],
    fps: float,
    tolerance_s: float = 2.0,
    min_iou: float = 0.3,
) -> EventScores:
    """An alert matches a ground-truth event of the track whose box it overlaps at the alert's
    start frame, when it starts within the event (widened by `tolerance_s`). Each event and each
    alert is matched at most once; unmatched alerts are false alerts."""
    slack = round(tolerance_s * fps)
    scores = EventScores(gt_events, alerts, footage_s=len(gt.frame_numbers) / fps)
    used: set[int] = set()
    for alert in sorted(alerts, key=lambda a: a.start_frame):
        truth = gt.boxes(alert.start_frame)
        if len(truth) == 0 or truth.tracker_id is None:
            continue
        iou = box_iou(np.array([alert.box], np.float32), truth.xyxy)[0]
        for index in np.argsort(-iou):
            if iou[index] < min_iou:
                break
            track = int(truth.tracker_id[index])
            for e_index, event in enumerate(gt_events):
                if (
                    e_index not in used
                    and event.track_id == track
                    and event.start_frame - slack <= alert.start_frame <= event.end_frame + slack
                ):
                    used.add(e_index)
                    scores.matched.append((event, alert))
                    break
            else:
                continue
            break
    return scores
