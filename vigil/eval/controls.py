"""What each false-positive control (object filter, score threshold, object mask) removed in a run,
and what it cost: pure bookkeeping over the engine's traced frames and the alerts of re-runs.

A *control* is one filter key over every class of the camera (`min_score`, `min_area`,
`max_area`, `min_ratio`, `max_ratio`, `threshold`) or one object mask (`mask:<name>`). Its boxes
are counted from the traced run (each removed box under the first control that removed it, so the
counts add up); its alerts by re-running the engine with that control alone switched off
(`without`) and comparing: the alerts it removed, how many of those were false, and the events
the run lost to it (its recall cost).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.config import CameraObjectsConfig, ObjectFilterConfig
from vigil.eval.events import EventScores, FrameObservation
from vigil.eval.groundtruth import GroundTruth
from vigil.geometry import box_iou

FILTER_KEYS = ("min_score", "min_area", "max_area", "min_ratio", "max_ratio", "threshold")
NEUTRAL: dict[str, Any] = {"min_score": 0.0, "min_area": 0.0, "max_area": None, "min_ratio": 0.0, "max_ratio": None,
                           "threshold": 0.0}  # fmt: skip
ALL = "all"


def active_controls(objects: CameraObjectsConfig) -> list[str]:
    """The controls that can remove something, filters in FILTER_KEYS order, then masks."""
    used = {key for f in objects.filters.values() for key in f.active()}
    return [k for k in FILTER_KEYS if k in used] + [f"mask:{m.name}" for m in objects.masks]


def without(objects: CameraObjectsConfig, control: str) -> CameraObjectsConfig:
    """`objects` with one control switched off (`ALL`: every control)."""
    keys = FILTER_KEYS if control == ALL else (control,) if control in FILTER_KEYS else ()
    filters = {name: _neutral(f, keys) for name, f in objects.filters.items()}
    masks = [] if control == ALL else [m for m in objects.masks if f"mask:{m.name}" != control]
    return CameraObjectsConfig(filters=filters, score_window=objects.score_window, masks=masks)


def _neutral(f: ObjectFilterConfig, keys: tuple[str, ...]) -> ObjectFilterConfig:
    return ObjectFilterConfig.model_validate({**f.model_dump(), **{k: NEUTRAL[k] for k in keys}})


@dataclass
class ControlEffect:
    """One control: boxes it removed (threshold: tracked boxes it held back) and, from the re-run
    without it, the alerts and events it made the difference for."""

    control: str
    boxes: int = 0
    on_labelled: int = 0  # of those, boxes on a labelled object (IoU >= 0.5): true detections removed
    tracks_held_back: int = 0  # threshold only: tracks that never reached it
    alerts_without: int = 0
    false_alerts_without: int = 0
    matched_without: int = 0
    event_recall_without: float = 0.0
    alert_precision_without: float = 0.0
    alerts_removed: int = 0
    false_alerts_removed: int = 0
    events_lost: int = 0

    def compare(self, run: EventScores, ablated: EventScores) -> None:
        """Fill the alert figures from the run's scores and those of the run without this control."""
        self.alerts_without, self.false_alerts_without = len(ablated.alerts), ablated.false_alerts
        self.matched_without = len({e for e, _ in ablated.matched})
        self.event_recall_without, self.alert_precision_without = ablated.event_recall, ablated.alert_precision
        self.alerts_removed = len(ablated.alerts) - len(run.alerts)
        self.false_alerts_removed = ablated.false_alerts - run.false_alerts
        self.events_lost = self.matched_without - len({e for e, _ in run.matched})


@dataclass
class ControlsReport:
    """Every active control's effect, the boxes the tracker was given against those detected, and
    the box scores after the controls (what the tracker saw, at the detection threshold)."""

    boxes_in: int
    boxes_kept: int
    effects: list[ControlEffect] = field(default_factory=list)
    kept_precision: float = 0.0
    kept_recall: float = 0.0
    kept_f1: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "boxes_in": self.boxes_in,
            "boxes_kept": self.boxes_kept,
            "boxes_removed": self.boxes_in - self.boxes_kept,
            "after_filters": {"precision": self.kept_precision, "recall": self.kept_recall, "f1": self.kept_f1},
            "controls": {e.control: {k: v for k, v in vars(e).items() if k != "control"} for e in self.effects},
        }

    def markdown(self) -> list[str]:
        lines = [
            "",
            "## Object filters and masks",
            "",
            f"{self.boxes_in - self.boxes_kept} of {self.boxes_in} detected boxes removed before tracking; the boxes "
            f"the tracker saw score precision {self.kept_precision:.3f}, recall {self.kept_recall:.3f} "
            f"(F1 {self.kept_f1:.3f}). Alerts: this run against a re-run with the control switched off.",
            "",
            "| control | boxes removed | on labelled objects | alerts removed | false alerts removed | events lost "
            "| recall without | precision without |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for e in self.effects:
            boxes = f"{e.boxes} held back ({e.tracks_held_back} tracks)" if e.control == "threshold" else str(e.boxes)
            lines.append(
                f"| {e.control} | {boxes} | {e.on_labelled} | {e.alerts_removed} | {e.false_alerts_removed} "
                f"| {e.events_lost} | {e.event_recall_without:.3f} | {e.alert_precision_without:.3f} |"
            )
        return lines


def box_effects(
    gt: GroundTruth, observations: dict[int, FrameObservation], controls: list[str], min_iou: float = 0.5
) -> tuple[int, int, dict[str, ControlEffect]]:
    """(boxes in, boxes kept, per control the boxes it removed and how many lay on a labelled object)
    over the traced frames; observations and ground truth in ground-truth pixels."""
    effects = {c: ControlEffect(c) for c in [*controls, ALL]}
    total = kept = 0
    held = 0  # tracked rows whose track had not reached its threshold yet
    tracks: set[int] = set()
    positive_tracks: set[int] = set()
    for number, seen in observations.items():
        reasons = np.asarray(seen.removed, object) if len(seen.removed) == len(seen.detections) else None
        total += len(seen.detections)
        kept += len(seen.detections) if reasons is None else int((reasons == "").sum())
        if reasons is not None and (reasons != "").any():
            truth = gt.boxes(number)
            real = truth[~truth.data["ignore"]] if len(truth) else truth
            iou = box_iou(seen.detections.xyxy, real.xyxy) if len(real) else np.zeros((len(reasons), 0))
            on_object = iou.max(axis=1) >= min_iou if iou.shape[1] else np.zeros(len(reasons), bool)
            for reason, labelled in zip(reasons.tolist(), on_object.tolist(), strict=True):
                if reason and reason in effects:
                    for key in (reason, ALL):
                        effects[key].boxes += 1
                        effects[key].on_labelled += labelled
        positive = seen.tracked.data.get("true_positive")
        if positive is not None and seen.tracked.tracker_id is not None:
            ids = seen.tracked.tracker_id
            tracks.update(ids.tolist())
            positive_tracks.update(ids[positive.astype(bool)].tolist())
            held += int((~positive.astype(bool)).sum())
    if "threshold" in effects:
        effects["threshold"].boxes = held
        effects["threshold"].tracks_held_back = len(tracks - positive_tracks)
    return total, kept, effects
