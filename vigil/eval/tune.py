"""`vigil tune`: choose detection thresholds, tracker thresholds and a rule's settings on one or
more labelled clips, and check them on clips they were not tuned on.

The model runs once per frame of each clip; its raw outputs are cached and every (conf, iou) grid
point re-runs only decode + NMS (`Detector.postprocess` with other `Thresholds`). Greedy NMS and
greedy best-score-first matching both commute with a score cut, so one postprocess per IoU at the
lowest confidence, matched once, gives the counts of every confidence threshold by a cumulative
sum, and cutting that output at a confidence gives the detections of that threshold.

Two stages, each on the objective summed over the training clips (counts added, then the ratio):

1. `detect.conf_threshold` / `iou_threshold` by the box objective (F1, or recall at a target
   precision), the middle of the F1 plateau;
2. the tracker's thresholds (`alerts.tracker`), the rule's (`min_confidence`, `min_frames`,
   `min_dwell_s`, `end_after_s`, `rejoin_s`) and, for each of the rule's classes, the camera's
   object filter `min_score` and score `threshold` (`objects.<class>.*`: the camera's merged
   `objects.filters`) by event F1 (event recall and alert precision), by
   coordinate search (`vigil.eval.search`), simulating the aggregator's own `AlertEngine`
   in-process on detections records built from the stage-1 detections (capture time = the
   footage's own timeline). The events that must alert are those of the rule *as configured* on
   the ground truth; the tuned values are those that reproduce them best.

With several clips, each clip is held out in turn (tuned on the others, scored on it): a tuned
setting that lowers any held-out clip's event F1 below the configured default's is reported as
such and not recommended.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.config import (
    AlertsConfig,
    CameraConfig,
    CameraObjectsConfig,
    ObjectFilterConfig,
    RuleConfig,
    TrackerConfig,
    VigilConfig,
)
from vigil.contracts import DetectionsRecord, FrameRef, ModelRef
from vigil.detections import Detections
from vigil.eval.alignment import check_alignment
from vigil.eval.events import FiredAlert, GtEvent, ground_truth_events, match_events
from vigil.eval.groundtruth import GroundTruth, GroundTruthError
from vigil.eval.pipeline import EvalTarget, choose_target
from vigil.eval.run import load_ground_truth, read_frames, subset, video_fps
from vigil.eval.scoring import match_frame
from vigil.eval.search import Fold, Setting, coordinate_search, leave_one_out, verdict
from vigil.settings import resolve_config

CONFS = tuple(round(float(c), 3) for c in np.arange(0.05, 0.901, 0.025))
IOUS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
# Stage 2 grids. Tracker keys that TrackerConfig does not have are skipped (tune what exists).
TRACKER_GRID: dict[str, tuple[Any, ...]] = {
    "high_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "low_threshold": (0.05, 0.1, 0.2, 0.3),
    "match_iou": (0.1, 0.2, 0.3, 0.4, 0.5),
    "min_hits": (1, 2, 3, 4, 5),
    "lost_after_s": (0.5, 1.0, 2.0, 3.0, 5.0),
}
RULE_GRID: dict[str, tuple[Any, ...]] = {
    "min_confidence": (0.3, 0.4, 0.5, 0.6, 0.7),
    "min_frames": (1, 2, 3, 4, 5, 6, 8),
    "min_dwell_s": (0.0, 0.2, 0.5, 1.0),
    "end_after_s": (0.5, 1.0, 2.0, 3.0, 5.0),
    "rejoin_s": (0.0, 0.5, 1.0, 2.0, 3.0, 5.0),
}
# Per rule class: the camera's object filter values (`objects.<class>.<key>`).
OBJECTS_GRID: dict[str, tuple[Any, ...]] = {
    "min_score": (0.0, 0.3, 0.4, 0.5, 0.6, 0.7),
    "threshold": (0.0, 0.4, 0.5, 0.6, 0.7, 0.8),
}
NS = 1_000_000_000
PLATEAU_F1 = 0.01  # box F1
PLATEAU_EVENT_F1 = 0.01  # event F1: a few events per clip, so steps are coarse anyway


@dataclass(frozen=True)
class Point:
    conf: float
    iou: float
    precision: float
    recall: float
    f1: float


def _prf(tp: int, fp: int, n_gt: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_gt if n_gt else 0.0
    return precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0


@dataclass
class ClipCache:
    """Raw model outputs of every labelled frame of one clip, and what postprocess needs with them."""

    gt: GroundTruth
    fps: float
    frames: list[tuple[int, npt.NDArray[np.float32], Any, int, int]]  # (gt frame, output, prepared, w, h)
    name: str = ""
    _lowest: dict[float, dict[int, Detections]] = field(default_factory=dict, repr=False)

    def detections(self, detector: Any, conf: float, iou: float) -> dict[int, Detections]:
        """GT frame -> detections at (conf, iou): the lowest-confidence output of this IoU, cut."""
        from detect.detector import Thresholds

        if iou not in self._lowest:
            detector.thresholds = Thresholds(min(CONFS), iou, detector.thresholds.max_detections)
            self._lowest[iou] = {n: detector.postprocess(out, prepared)[0] for n, out, prepared, _, _ in self.frames}
        return {n: d[d.confidence >= conf] for n, d in self._lowest[iou].items()}


def cache_clip(detector: Any, video: Path, gt: GroundTruth) -> ClipCache:
    """Run the model once on every labelled frame of `video`."""
    from detect.preprocess import PreparedBatch

    wanted = {n - 1 for n in gt.frame_numbers}
    frames = []
    for index, image in read_frames(video, wanted):
        prepared = detector.preprocess([image])
        output = detector.infer(prepared.tensor, canvases=prepared.canvases)
        frames.append((index + 1, output, PreparedBatch(np.empty(0, np.float32), prepared.boxes), *image.shape[1::-1]))
        if len(frames) % 10 == 0 or len(frames) == len(wanted):
            sys.stderr.write(f"\r {video.name}: inferred {len(frames)}/{len(wanted)} frames   ")
    sys.stderr.write("\n")
    if not frames:
        raise GroundTruthError(f"no frame of {video} has ground truth (frames {gt.frame_numbers[:3]}...)")
    seen = [f[0] for f in frames]
    return ClipCache(subset(gt, seen), gt.fps or video_fps(video), frames, video.name)


def class_pairs(gt: GroundTruth, model_names: tuple[str, ...]) -> list[tuple[int, int]]:
    missing = [n for n in gt.class_names if n not in model_names]
    if missing:
        raise GroundTruthError(f"ground-truth classes {missing} are not the model's classes; rename them in the labels")
    return [(i, model_names.index(n)) for i, n in enumerate(gt.class_names)]


def threshold_counts(
    gt: GroundTruth, preds: dict[int, Detections], model_names: tuple[str, ...], confs: tuple[float, ...] = CONFS
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
    """(true positives, false positives) at every confidence of `confs` and the labelled box
    count, summed over classes at IoU 0.5, from one matching."""
    scores, hits, ignored = [], [], []
    gt_count = 0
    for gt_index, model_id in class_pairs(gt, model_names):
        for frame in gt.frame_numbers:
            truth = gt.boxes(frame)
            truth = truth[truth.class_id == gt_index]
            gt_count += int((~truth.data["ignore"]).sum())
            pred = preds.get(frame, Detections.empty())
            pred = pred[pred.class_id == model_id]
            hit, ign, _ = match_frame(truth, pred, 0.5)
            scores.append(pred.confidence)
            hits.append(hit)
            ignored.append(ign)
    s, t, g = np.concatenate(scores), np.concatenate(hits), np.concatenate(ignored)
    tp = np.array([int((t & (s >= c)).sum()) for c in confs], np.int64)
    fp = np.array([int((~t & ~g & (s >= c)).sum()) for c in confs], np.int64)
    return tp, fp, gt_count


def best_point(
    points: list[Point], objective: str, target_precision: float, default: tuple[float, float] | None = None
) -> tuple[Point, str]:
    """The chosen (conf, iou) grid point. For F1: the configured `default` point if it is on the
    plateau (within PLATEAU_F1 of the best), else the middle of the plateau."""
    if objective == "precision":
        reaching = [p for p in points if p.precision >= target_precision]
        if reaching:
            return max(reaching, key=lambda p: (p.recall, p.precision, p.conf)), "reached"
        return max(points, key=lambda p: (p.precision, p.recall)), "not reached: highest precision shown"
    # On a short clip the F1 curve is flat near its top and its highest grid point is partly noise:
    # the middle of the plateau (points within PLATEAU_F1 of the best) generalises better than a peak.
    top = max(p.f1 for p in points)
    plateau = [p for p in points if p.f1 >= top - PLATEAU_F1]
    kept = [p for p in plateau if default is not None and (p.conf, p.iou) == default]
    if kept:
        return kept[0], f"configured thresholds kept: on the F1 plateau (best {top:.3f}, within {PLATEAU_F1})"
    conf, iou = float(np.median([p.conf for p in plateau])), float(np.median([p.iou for p in plateau]))
    chosen = min(plateau, key=lambda p: (abs(p.conf - conf), abs(p.iou - iou), -p.f1))
    return chosen, f"middle of the F1 plateau (best {top:.3f}, {len(plateau)} points within {PLATEAU_F1})"


# ---------------------------------------------------------------------------------------------- alerts


def configured(config: VigilConfig, rule: RuleConfig | None, camera: CameraConfig | None = None) -> Setting:
    """The config's values of every tuned key: `detect.*`, `tracker.*`, `rule.*` and, per class of
    the rule, `objects.<class>.*` (the camera's merged object filter for that class)."""
    d, t = config.detect, config.alerts.tracker
    setting: Setting = {"detect.conf_threshold": d.conf_threshold, "detect.iou_threshold": d.iou_threshold}
    setting |= {f"tracker.{k}": getattr(t, k) for k in TRACKER_GRID if k in TrackerConfig.model_fields}
    if rule is not None:
        setting |= {f"rule.{k}": getattr(rule, k) for k in RULE_GRID if k in RuleConfig.model_fields}
        objects = config.camera_objects(camera) if camera is not None else CameraObjectsConfig()
        for name in rule.classes:
            entry = objects.filter_for(name) or ObjectFilterConfig()
            setting |= {f"objects.{name}.{k}": getattr(entry, k) for k in OBJECTS_GRID}
    return setting


def tuned_objects(objects: CameraObjectsConfig, setting: Setting) -> CameraObjectsConfig:
    """The merged objects section with `setting`'s `objects.<class>.<key>` values: each tuned class
    gets an entry of its own (its effective one, the default's if it had none, with the values)."""
    values: dict[str, dict[str, Any]] = {}
    for key, value in setting.items():
        if key.startswith("objects."):
            name, field_name = key[len("objects.") :].rsplit(".", 1)
            values.setdefault(name, {})[field_name] = value
    filters = dict(objects.filters)
    for name, changes in values.items():
        entry = objects.filter_for(name) or ObjectFilterConfig()
        filters[name] = ObjectFilterConfig.model_validate({**entry.model_dump(), **changes})
    return CameraObjectsConfig(filters=filters, score_window=objects.score_window, masks=objects.masks)


def apply(
    alerts: AlertsConfig, rule: RuleConfig, setting: Setting, camera: CameraConfig, objects: CameraObjectsConfig
) -> tuple[AlertsConfig, CameraConfig]:
    """The alerts section with `setting`'s tracker and rule values, the rule alone, on `camera`,
    and the camera with `objects` (merged over the global section already) and the tuned filters."""
    tracker = {k.split(".", 1)[1]: v for k, v in setting.items() if k.startswith("tracker.")}
    rule_values = {k.split(".", 1)[1]: v for k, v in setting.items() if k.startswith("rule.")}
    tuned_rule = RuleConfig.model_validate({**rule.model_dump(), **rule_values, "cameras": [camera.id]})
    tuned_tracker = TrackerConfig.model_validate({**alerts.tracker.model_dump(), **tracker})
    tuned_camera = camera.model_copy(update={"objects": tuned_objects(objects, setting)})
    return alerts.model_copy(update={"rules": [tuned_rule], "tracker": tuned_tracker}), tuned_camera


def valid(setting: Setting) -> bool:
    low, high = setting.get("tracker.low_threshold"), setting.get("tracker.high_threshold")
    return low is None or high is None or low <= high


def simulate_alerts(
    alerts: AlertsConfig,
    camera: CameraConfig,
    cache: ClipCache,
    preds: dict[int, Detections],
    class_names: tuple[str, ...],
) -> list[FiredAlert]:
    """The aggregator's engine on records built from `preds`; alerts at the frame they started.
    `camera.objects` is taken as merged already (no global `objects` under it)."""
    from alerts.engine import AlertEngine

    engine = AlertEngine(alerts, [camera])
    sizes = {n: (w, h) for n, _, _, w, h in cache.frames}
    fired: list[FiredAlert] = []
    base_ns = 1_700_000_000 * NS
    for number in sorted(preds):
        dets = preds[number]
        capture = base_ns + round((number - 1) * NS / cache.fps)
        width, height = sizes[number]
        record = DetectionsRecord(
            camera_id=camera.id,
            seq=number,
            capture_ns=capture,
            frame=FrameRef("tune", 0, number),
            model=ModelRef("tune", "0"),
            width=width,
            height=height,
            detections=dets,
            class_names=tuple(class_names[i] for i in dets.class_id),
            frame_index=number - 1,
        )
        for alert in engine.process(record, capture):
            if alert.event == "started":
                fired.append(FiredAlert(alert.alert_id, alert.frame.offset, alert.box))
    return fired


@dataclass(frozen=True)
class EventCounts:
    matched_events: int
    gt_events: int
    matched_alerts: int
    fired: int

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    @property
    def recall(self) -> float:
        return self.matched_events / self.gt_events if self.gt_events else 1.0

    @property
    def precision(self) -> float:
        return self.matched_alerts / self.fired if self.fired else (0.0 if self.gt_events else 1.0)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


class Tuner:
    """The clips, the model's cached outputs and memoised scores; `tune_on(clips)` -> setting."""

    def __init__(
        self, config: VigilConfig, detector: Any, clips: list[ClipCache], target: EvalTarget, objective: str,
        target_precision: float,
    ) -> None:  # fmt: skip
        self.config = config
        self.detector = detector
        self.names = tuple(detector.class_names)
        self.clips = clips
        self.target = target
        self.objective = objective
        self.target_precision = target_precision
        self.default = configured(config, target.rule, target.camera)
        self.objects = config.camera_objects(target.camera)
        self.events: list[list[GtEvent]] = [
            ground_truth_events(c.gt, target.zone, target.rule, c.fps) if target.rule is not None else [] for c in clips
        ]
        # The grids plus the configured thresholds, so "keep the default" is always a candidate.
        conf, iou = self.default["detect.conf_threshold"], self.default["detect.iou_threshold"]
        self.confs = tuple(sorted(set(CONFS) | ({conf} if conf >= min(CONFS) else set())))
        self.ious = tuple(sorted(set(IOUS) | {iou}))
        self._boxes: dict[tuple[int, float], tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]] = {}
        self._events: dict[tuple[int, tuple[tuple[str, Any], ...]], EventCounts] = {}
        self.status = ""

    def _counts(self, clip: int, iou: float) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], int]:
        if (clip, iou) not in self._boxes:
            c = self.clips[clip]
            preds = c.detections(self.detector, min(CONFS), iou)
            self._boxes[clip, iou] = threshold_counts(c.gt, preds, self.names, self.confs)
        return self._boxes[clip, iou]

    def box_point(self, clips: list[int], conf: float, iou: float) -> Point:
        """Box P/R/F1 at (conf, iou), counts summed over `clips`."""
        tp = fp = n = 0
        for clip in clips:
            preds = self.clips[clip].detections(self.detector, conf, iou)
            for gt_index, model_id in class_pairs(self.clips[clip].gt, self.names):
                for frame in self.clips[clip].gt.frame_numbers:
                    truth = self.clips[clip].gt.boxes(frame)
                    truth = truth[truth.class_id == gt_index]
                    pred = preds.get(frame, Detections.empty())
                    hit, ign, missed = match_frame(truth, pred[pred.class_id == model_id], 0.5)
                    tp, fp, n = tp + int(hit.sum()), fp + int((~hit & ~ign).sum()), n + int(hit.sum()) + missed
        return Point(conf, iou, *_prf(tp, fp, n))

    def event_counts(self, clip: int, setting: Setting) -> EventCounts:
        key = (clip, tuple(sorted(setting.items())))
        if key not in self._events:
            assert self.target.rule is not None
            c = self.clips[clip]
            preds = c.detections(self.detector, setting["detect.conf_threshold"], setting["detect.iou_threshold"])
            alerts, camera = apply(self.config.alerts, self.target.rule, setting, self.target.camera, self.objects)
            fired = simulate_alerts(alerts, camera, c, preds, self.names)
            scores = match_events(c.gt, self.events[clip], fired, c.fps)
            matched_alerts = len({a.alert_id for _, a in scores.matched})
            self._events[key] = EventCounts(len(scores.matched), len(self.events[clip]), matched_alerts, len(fired))
        return self._events[key]

    def tune_on(self, clips: list[int]) -> Setting:
        """Stage 1 (detection thresholds), then stage 2 (tracker and rule) on `clips` together."""
        label = "+".join(self.clips[i].name for i in clips)
        points = []
        for iou in self.ious:
            summed = [self._counts(i, iou) for i in clips]
            tp, fp = np.sum([s[0] for s in summed], axis=0), np.sum([s[1] for s in summed], axis=0)
            n = sum(s[2] for s in summed)
            points += [Point(c, iou, *_prf(int(tp[k]), int(fp[k]), n)) for k, c in enumerate(self.confs)]
        default = (self.default["detect.conf_threshold"], self.default["detect.iou_threshold"])
        best, self.status = best_point(points, self.objective, self.target_precision, default)
        setting = {**self.default, "detect.conf_threshold": best.conf, "detect.iou_threshold": best.iou}
        if self.target.rule is None:
            return setting
        grids = {f"tracker.{k}": v for k, v in TRACKER_GRID.items() if f"tracker.{k}" in setting}
        grids |= {f"rule.{k}": v for k, v in RULE_GRID.items() if f"rule.{k}" in setting}
        grids |= {k: OBJECTS_GRID[k.rsplit(".", 1)[1]] for k in setting if k.startswith("objects.")}

        def objective(candidate: Setting) -> float:
            return sum((self.event_counts(i, candidate) for i in clips), EventCounts(0, 0, 0, 0)).f1

        def progress(line: str) -> None:
            sys.stderr.write(f"\r tune on {label}: {line}".ljust(110)[:110])
            sys.stderr.flush()

        setting, _, _ = coordinate_search(setting, grids, objective, PLATEAU_EVENT_F1, valid=valid, progress=progress)
        sys.stderr.write("\n")
        return setting

    def score_on(self, clip: int, setting: Setting | None) -> dict[str, float]:
        """Box and event scores of `setting` (None: the configured default) on one clip."""
        s = setting or self.default
        box = self.box_point([clip], s["detect.conf_threshold"], s["detect.iou_threshold"])
        scores = {"precision": box.precision, "recall": box.recall, "f1": box.f1}
        if self.target.rule is not None:
            e = self.event_counts(clip, s)
            scores |= {"event_recall": e.recall, "alert_precision": e.precision, "event_f1": e.f1,
                       "alerts": float(e.fired), "events": float(e.gt_events)}  # fmt: skip
        return scores


# ---------------------------------------------------------------------------------------------- result


@dataclass
class TuneResult:
    videos: list[str]
    objective: str
    status: str
    default: Setting
    tuned: Setting
    default_scores: dict[str, float]  # on all clips together (the clips it was tuned on)
    tuned_scores: dict[str, float]
    rule: str | None
    folds: list[Fold]
    recommended: bool
    verdict: str
    camera: str | None = None
    # The tuned classes' whole object filter entries (non-default values): a camera's entry for a
    # class replaces the global one whole, so the snippet must carry every value of it.
    object_filters: dict[str, dict[str, Any]] = field(default_factory=dict)

    def changes(self) -> Setting:
        return {k: v for k, v in self.tuned.items() if self.default.get(k) != v}

    def snippet(self) -> str:
        t = self.tuned
        lines = [
            "detect:",
            f"  conf_threshold: {t['detect.conf_threshold']}",
            f"  iou_threshold: {t['detect.iou_threshold']}",
        ]
        changed = self.changes()
        tracker = [f"    {k.split('.', 1)[1]}: {v}" for k, v in changed.items() if k.startswith("tracker.")]
        rule = [f"      {k.split('.', 1)[1]}: {v}" for k, v in changed.items() if k.startswith("rule.")]
        if tracker or rule:
            lines.append("alerts:")
        if tracker:
            lines += ["  tracker:", *tracker]
        if rule and self.rule is not None:
            lines += ["  rules:", f"    - name: {self.rule}", *rule]
        classes = {k.split(".")[1] for k in changed if k.startswith("objects.")}
        if classes and self.camera is not None:
            lines += ["cameras:  # merge into the camera's entry", f"  - id: {self.camera}", "    objects:",
                      "      filters:"]  # fmt: skip
            for name in sorted(classes):
                values = ", ".join(f"{k}: {v}" for k, v in self.object_filters.get(name, {}).items())
                lines.append(f"        {name}: {{{values}}}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["changes"] = self.changes()
        return data


def tune(
    config: VigilConfig, clips: list[tuple[Path, GroundTruth]], model: str | None = None, objective: str = "f1",
    target_precision: float = 0.9, camera: str | None = None, rule: str | None = None,
) -> TuneResult:  # fmt: skip
    from detect.detector import Detector

    detector = Detector.from_config(config.detect, model, conf=min(CONFS))
    caches = [cache_clip(detector, video, gt) for video, gt in clips]
    for cache in caches:  # labels shifted in time are refused before anything is tuned on them
        lowest = cache.detections(detector, min(CONFS), config.detect.iou_threshold)
        check_alignment(cache.gt, lowest, tuple(detector.class_names), "model")
    target = choose_target(config, str(clips[0][0]), camera, rule)
    tuner = Tuner(config, detector, caches, target, objective, target_precision)
    everything = list(range(len(caches)))
    names = [c.name for c in caches]
    folds = leave_one_out(names, tuner.tune_on, tuner.score_on)
    tuned = tuner.tune_on(everything)
    status = tuner.status

    def summed(setting: Setting) -> dict[str, float]:
        box = tuner.box_point(everything, setting["detect.conf_threshold"], setting["detect.iou_threshold"])
        out = {"precision": box.precision, "recall": box.recall, "f1": box.f1}
        if target.rule is not None:
            e = sum((tuner.event_counts(i, setting) for i in everything), EventCounts(0, 0, 0, 0))
            out |= {"event_recall": e.recall, "alert_precision": e.precision, "event_f1": e.f1}
        return out

    recommended, why = verdict(folds, "event_f1" if target.rule is not None else "f1")
    entries = tuned_objects(tuner.objects, tuned).filters
    filters = {n: entries[n].model_dump(exclude_defaults=True) for n in entries if f"objects.{n}.threshold" in tuned}
    return TuneResult(
        [str(v) for v, _ in clips], objective, status, tuner.default, tuned, summed(tuner.default), summed(tuned),
        target.rule.name if target.rule is not None else None, folds, recommended, why, target.camera.id, filters,
    )  # fmt: skip


def _line(scores: dict[str, float]) -> str:
    text = f"box P {scores['precision']:.3f} R {scores['recall']:.3f} F1 {scores['f1']:.3f}"
    if "event_f1" in scores:
        text += (f"; event F1 {scores['event_f1']:.3f} (recall {scores['event_recall']:.3f}, "
                 f"alert precision {scores['alert_precision']:.3f})")  # fmt: skip
    return text


def tune_cli(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    videos, gts = args.video or [], args.gt or []
    if len(videos) != len(gts):
        print(f"vigil tune: give one --gt per --video (got {len(videos)} --video, {len(gts)} --gt)", file=sys.stderr)
        return 2
    clips = [
        (Path(v), load_ground_truth(g, args.gt_format, Path(v), args.gt_offset, config.class_names()))
        for v, g in zip(videos, gts, strict=True)
    ]
    result = tune(config, clips, args.model, args.objective, args.target_precision, args.camera, args.rule)
    names = ", ".join(Path(v).name for v in result.videos)
    print(f"# vigil tune on {names}; detection thresholds: {result.objective} ({result.status})")
    print(f"# default on all clips: {_line(result.default_scores)}")
    print(f"# tuned on all clips:   {_line(result.tuned_scores)}")
    for fold in result.folds:
        trained = "+".join(fold.trained_on)
        print(f"# held out {fold.held_out} (tuned on {trained}):")
        print(f"#   default: {_line(fold.default)}")
        mark = "  <- lower event F1" if fold.lowered("event_f1") and "event_f1" in fold.tuned else ""
        print(f"#   tuned:   {_line(fold.tuned)}{mark}")
    print(f"# {result.verdict}")
    print(result.snippet())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0
