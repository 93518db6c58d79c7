"""Alert-level scoring: which ground-truth tracks should have raised an alert under a zone rule,
how the alerts the pipeline fired compare (event recall, alert precision, false alerts per hour),
and why: the reason each missed event was missed, and what each false alert was."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from vigil.config import RuleConfig, ZoneConfig
from vigil.detections import Detections
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


MissReason = Literal[
    "never_detected",  # no box of the rule's classes overlapped the object
    "filtered",  # detected, but every box on it was removed by an object filter or mask before tracking
    "never_confirmed",  # detected, but the tracker never confirmed a track on it
    "rule_not_satisfied",  # tracked, but its box was below min_confidence or its anchor outside the zone
    "min_frames_not_reached",  # in the zone, but never for min_frames consecutive frames / min_dwell_s
    "below_threshold",  # tracked, but its track's median score never reached the class's objects threshold
    "outside_schedule",  # would have alerted, but the rule's schedule was closed
    "rate_limited",  # its alert started silently: rate_limit_per_minute was reached
    "cooldown",  # its track was in cooldown after an earlier alert
    "merged",  # its track carried another object's alert (a tracker identity switch, or a rejoin)
    "alert_not_matched",  # its own alert ran, but started outside the event's window (± tolerance)
    "earlier_alert_running",  # the alert of its previous event had not ended: one event to the pipeline, two labelled
]
FalseKind = Literal["duplicate", "not_due", "no_ground_truth"]


@dataclass(frozen=True)
class MissedEvent:
    event: GtEvent
    reason: MissReason
    detail: str


@dataclass(frozen=True)
class FalseAlert:
    """An alert that matched no event: a second alert for an object whose event another alert
    matched (`duplicate`), an alert on a labelled object with no event due then (`not_due`), or one
    where nothing is labelled (`no_ground_truth`: a false detection, or an ignore region)."""

    alert: FiredAlert
    kind: FalseKind
    track_id: int | None
    detail: str


@dataclass(frozen=True)
class FrameObservation:
    """What the alert engine saw and did at one frame (boxes in ground-truth pixels): the detections
    it was given (`data["class_name"]`) and why each one it removed before tracking was removed
    (`removed`: a filter's name or `mask:<name>`, "" for those kept), its confirmed tracks, and the
    rule's outcome per tracked row (`alerts.rules.Outcome`: pending, started, cooldown, zone, ...)."""

    frame: int
    detections: Detections
    tracked: Detections
    outcomes: list[str]
    alert_ids: list[str] = field(default_factory=list)  # the alert each tracked row carries, "" if none
    removed: list[str] = field(default_factory=list)


@dataclass
class EventScores:
    gt_events: list[GtEvent]
    alerts: list[FiredAlert]
    matched: list[tuple[GtEvent, FiredAlert]] = field(default_factory=list)
    footage_s: float = 0.0
    missed: list[MissedEvent] = field(default_factory=list)
    false: list[FalseAlert] = field(default_factory=list)

    @property
    def event_recall(self) -> float:
        return len({m[0] for m in self.matched}) / len(self.gt_events) if self.gt_events else 1.0

    @property
    def alert_precision(self) -> float:
        """Matched alerts / alerts fired (1.0 when nothing fired and nothing was due)."""
        if not self.alerts:
            return 0.0 if self.gt_events else 1.0
        return len({m[1].alert_id for m in self.matched}) / len(self.alerts)

    @property
    def event_f1(self) -> float:
        p, r = self.alert_precision, self.event_recall
        return 2 * p * r / (p + r) if p + r else 0.0

    @property
    def false_alerts(self) -> int:
        return len(self.alerts) - len({m[1].alert_id for m in self.matched})

    @property
    def false_alerts_per_hour(self) -> float:
        return self.false_alerts / (self.footage_s / 3600) if self.footage_s else 0.0

    @property
    def duplicates(self) -> int:
        """False alerts that are a second alert for an event already alerted on."""
        return sum(f.kind == "duplicate" for f in self.false)

    def reasons(self) -> dict[str, int]:
        return dict(Counter(m.reason for m in self.missed))


def ground_truth_events(
    gt: GroundTruth, zone: ZoneConfig | None, rule: RuleConfig, fps: float, frames: list[int] | None = None
) -> list[GtEvent]:
    """Apply the rule's zone, consecutive-frames, dwell and end conditions to the labelled tracks.

    This is the reference definition, on perfect boxes and identities: an alert for a track is due
    once its anchor has been inside the zone for `min_frames` consecutive frames and `min_dwell_s`;
    it ends when the track has been outside or absent for `end_after_s`. `frames` are the frame
    numbers the pipeline saw (every labelled frame unless `vigil eval --fps` sampled them): frames
    are counted as the pipeline counts them, times come from the frame numbers at `fps`."""
    if gt.width is None or gt.height is None:
        raise ValueError("ground truth needs the image size (seqinfo.ini or COCO image width/height)")
    polygon = zone_polygon(zone, gt.width, gt.height)
    numbers = sorted(frames) if frames is not None else sorted(gt.frame_numbers)
    presence: dict[int, dict[int, bool]] = {}
    for frame in numbers:
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
    step = (numbers[-1] - numbers[0]) / (len(numbers) - 1) if len(numbers) > 1 else 1.0
    # Frames after the footage count as absent, as if the object left with the recording's end.
    tail = (
        [round(numbers[-1] + step * k) for k in range(1, round(rule.end_after_s * fps / step) + 2)] if numbers else []
    )
    events: list[GtEvent] = []
    for track, seen in sorted(presence.items()):
        run = 0
        run_start = 0
        active_start: int | None = None
        last_in = 0
        for frame in [n for n in numbers if n >= min(seen)] + tail:
            if seen.get(frame, False):
                run += 1
                run_start = frame if run == 1 else run_start
                last_in = frame
                if active_start is None and run >= rule.min_frames and (frame - run_start) / fps >= rule.min_dwell_s:
                    active_start = frame
            else:
                run = 0
                if active_start is not None and (frame - last_in) / fps >= rule.end_after_s - 1e-9:
                    events.append(GtEvent(track, active_start, last_in))
                    active_start = None
        if active_start is not None:
            events.append(GtEvent(track, active_start, max(seen)))
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


# ---------------------------------------------------------------------------------------------- why


def _track_box(gt: GroundTruth, frame: int, track: int) -> npt.NDArray[np.float32] | None:
    boxes = gt.boxes(frame)
    if boxes.tracker_id is None:
        return None
    rows = np.flatnonzero(boxes.tracker_id == track)
    return boxes.xyxy[rows[0] : rows[0] + 1] if len(rows) else None


def classify_false_alerts(gt: GroundTruth, scores: EventScores, min_iou: float = 0.3) -> list[FalseAlert]:
    """What each unmatched alert is (see `FalseAlert`), from the labelled box it overlaps best."""
    matched_ids = {a.alert_id for _, a in scores.matched}
    by_track: dict[int, str] = {e.track_id: a.alert_id for e, a in scores.matched}
    out: list[FalseAlert] = []
    for alert in scores.alerts:
        if alert.alert_id in matched_ids:
            continue
        truth = gt.boxes(alert.start_frame)
        iou = box_iou(np.array([alert.box], np.float32), truth.xyxy)[0] if len(truth) else np.zeros(0)
        real = ~truth.data["ignore"] if len(truth) else np.zeros(0, bool)
        best = int(np.argmax(np.where(real, iou, -1.0))) if len(truth) else -1
        if best < 0 or not real[best] or iou[best] < min_iou or truth.tracker_id is None:
            out.append(FalseAlert(alert, "no_ground_truth", None, "no labelled object under its box"))
            continue
        track = int(truth.tracker_id[best])
        if track in by_track:
            out.append(FalseAlert(alert, "duplicate", track, f"track {track} was already alerted by {by_track[track]}"))
        else:
            due = [e for e in scores.gt_events if e.track_id == track]
            when = f"its events: {[(e.start_frame, e.end_frame) for e in due]}" if due else "it has no event"
            out.append(FalseAlert(alert, "not_due", track, f"on track {track} at frame {alert.start_frame}; {when}"))
    return out


_PRIORITY: tuple[tuple[MissReason, frozenset[str]], ...] = (
    ("outside_schedule", frozenset({"outside_schedule"})),
    ("rate_limited", frozenset({"rate_limited", "active_silent"})),
    ("cooldown", frozenset({"cooldown", "rejoined_cooldown"})),
    ("min_frames_not_reached", frozenset({"pending"})),
    ("below_threshold", frozenset({"threshold"})),
)
_ALERTING = frozenset({"started", "active", "rejoined", "adopted"})


def explain_misses(
    gt: GroundTruth,
    scores: EventScores,
    observations: dict[int, FrameObservation],
    rule: RuleConfig,
    fps: float,
    tolerance_s: float = 2.0,
    min_iou: float = 0.3,
) -> list[MissedEvent]:
    """Why each unmatched event was missed: the last stage its object reached, from the engine's
    frames during the event (and `tolerance_s` before it). `observations` are keyed by frame."""
    slack = round(tolerance_s * fps)
    matched = {e for e, _ in scores.matched}
    owner = {a.alert_id: e for e, a in scores.matched}
    classes = set(rule.classes)
    out: list[MissedEvent] = []
    for event in scores.gt_events:
        if event in matched:
            continue
        frames = detected = kept = 0
        removed: Counter[str] = Counter()
        outcomes: Counter[str] = Counter()
        carried: Counter[str] = Counter()
        blocked: Counter[str] = Counter()
        for number in range(event.start_frame - slack, event.end_frame + 1):
            seen = observations.get(number)
            box = _track_box(gt, number, event.track_id)
            if seen is None or box is None:
                continue
            frames += 1
            dets = seen.detections
            names = dets.data.get("class_name", np.full(len(dets), "", object))
            of_class = np.isin(names, list(classes)) if len(dets) else np.zeros(0, bool)
            on_it = of_class & (box_iou(box, dets.xyxy)[0] >= min_iou) if of_class.any() else of_class
            if on_it.any():
                detected += 1
                why = np.asarray(seen.removed, object) if len(seen.removed) == len(dets) else np.full(len(dets), "")
                kept += bool((why[on_it] == "").any())
                removed.update(r for r in why[on_it].tolist() if r)
            if len(seen.tracked):
                iou = box_iou(box, seen.tracked.xyxy)[0]
                best = int(np.argmax(iou))
                if iou[best] >= min_iou:
                    outcome = seen.outcomes[best]
                    outcomes[outcome] += 1
                    alert = seen.alert_ids[best] if best < len(seen.alert_ids) else ""
                    if outcome in _ALERTING:
                        carried[alert] += 1
                    elif alert:
                        blocked[alert] += 1  # cooldown, rate-limited: whose alert held it back
        reason, detail = _reason(event, frames, (detected, kept, removed), outcomes, carried, owner, rule)
        if reason in ("cooldown", "rate_limited") and blocked:
            alert = blocked.most_common(1)[0][0]
            of = f" (of track {owner[alert].track_id})" if alert in owner else ""
            detail += f"; its track carried alert {alert}{of}"
        out.append(MissedEvent(event, reason, detail))
    return out


def _reason(
    event: GtEvent, frames: int, detections: tuple[int, int, Counter[str]], outcomes: Counter[str],
    carried: Counter[str], owner: dict[str, GtEvent], rule: RuleConfig,
) -> tuple[MissReason, str]:  # fmt: skip
    """`detections`: frames with a box on the object, frames where one of them was kept (not removed
    by an object filter or mask), and how many of its boxes each filter or mask removed."""
    detected, kept, removed = detections
    # An alert its track carried: another object's (matched to another track's event), or one of
    # its own that matched nothing; an alert of an earlier event of the same object is neither.
    foreign = [(a, owner[a]) for a, _ in carried.most_common() if a in owner and owner[a].track_id != event.track_id]
    if foreign:
        alert, other = foreign[0]
        return (
            "merged",
            f"its track carried alert {alert} of track {other.track_id} in {carried[alert]} of {frames} frames",
        )
    unowned = [(a, n) for a, n in carried.most_common() if a not in owner]
    if unowned:
        alert, n = unowned[0]
        return "alert_not_matched", f"alert {alert} ran on it in {n} of {frames} frames but started outside the event"
    if carried:
        alert, n = carried.most_common(1)[0]
        earlier = owner[alert]
        return "earlier_alert_running", (
            f"alert {alert} of its event at frames {earlier.start_frame}-{earlier.end_frame} was still running in "
            f"{n} of {frames} frames: its detected box did not leave the zone for end_after_s {rule.end_after_s:g} s"
        )
    for reason, codes in _PRIORITY:
        hits = sum(outcomes[c] for c in codes)
        if hits:
            if reason == "min_frames_not_reached":
                return reason, (
                    f"in the zone on a confirmed track in {hits} of {frames} frames, never {rule.min_frames} in a row "
                    f"for {rule.min_dwell_s:g} s"
                )
            if reason == "below_threshold":
                return reason, f"its track's median score was below the objects threshold in {hits} of {frames} frames"
            return reason, f"{reason.replace('_', ' ')} in {hits} of {frames} frames"
    if sum(outcomes.values()):
        why = {"confidence": f"below min_confidence {rule.min_confidence:g}", "zone": "anchor outside the zone"}
        common = [f"{why.get(k, k)} in {n}" for k, n in outcomes.most_common()]
        return "rule_not_satisfied", f"of {frames} frames: " + ", ".join(common)
    listed = ", ".join(f"{why} {n}" for why, n in removed.most_common())
    if detected and not kept:
        return "filtered", f"detected in {detected} of {frames} frames, every box removed before tracking ({listed})"
    if detected:
        also = f"; boxes removed before tracking: {listed}" if removed else ""
        return "never_confirmed", f"detected in {detected} of {frames} frames, never on a confirmed track{also}"
    return "never_detected", f"no {'/'.join(rule.classes)} box on it in {frames} frames"
