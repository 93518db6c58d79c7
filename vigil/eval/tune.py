"""`vigil tune`: search detect.conf_threshold, detect.iou_threshold and a rule's min_frames /
min_dwell_s on labelled footage.

The model runs once per frame; its raw outputs are cached and every (conf, iou) grid point re-runs
only decode + NMS (`Detector.postprocess` with other `Thresholds`). Greedy NMS and greedy
best-score-first matching both commute with a score cut, so one postprocess per IoU at the lowest
confidence, matched once, gives the counts of every confidence threshold by a cumulative sum.

Rule parameters are scored by simulating the aggregator's `AlertEngine` in-process on detections
records built from the tuned detections (capture time = the footage's own timeline), against the
ground-truth events of the rule as configured: the configured rule says which events must raise
an alert; the tuned min_frames / min_dwell_s say how the pipeline best reproduces them.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.config import RuleConfig, VigilConfig
from vigil.contracts import DetectionsRecord, FrameRef, ModelRef
from vigil.detections import Detections
from vigil.eval.alignment import check_alignment
from vigil.eval.events import FiredAlert, ground_truth_events, match_events
from vigil.eval.groundtruth import GroundTruth, GroundTruthError
from vigil.eval.pipeline import EvalTarget, choose_target
from vigil.eval.run import load_ground_truth, read_frames, subset, video_fps
from vigil.eval.scoring import match_frame, score_detections
from vigil.settings import resolve_config

CONFS = tuple(round(float(c), 3) for c in np.arange(0.05, 0.901, 0.025))
IOUS = (0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7)
MIN_FRAMES = (1, 2, 3, 4, 5, 6, 8, 10, 15)
MIN_DWELL_S = (0.0, 0.2, 0.5, 1.0, 2.0)
NS = 1_000_000_000
PLATEAU_F1 = 0.01


@dataclass(frozen=True)
class Point:
    conf: float
    iou: float
    precision: float
    recall: float
    f1: float


@dataclass(frozen=True)
class RulePoint:
    min_frames: int
    min_dwell_s: float
    event_recall: float
    alert_precision: float
    event_f1: float
    alerts: int


@dataclass
class ClipCache:
    """Raw model outputs of every labelled frame of one clip, and what postprocess needs with them."""

    gt: GroundTruth
    fps: float
    frames: list[tuple[int, npt.NDArray[np.float32], Any, int, int]]  # (gt frame, output, prepared, w, h)

    def detections(self, detector: Any, conf: float, iou: float) -> dict[int, Detections]:
        from detect.detector import Thresholds

        detector.thresholds = Thresholds(conf, iou, detector.thresholds.max_detections)
        return {n: detector.postprocess(out, prepared)[0] for n, out, prepared, _, _ in self.frames}


def cache_clip(detector: Any, video: Path, gt: GroundTruth) -> ClipCache:
    """Run the model once on every labelled frame of `video`."""
    from detect.preprocess import PreparedBatch

    wanted = {n - 1 for n in gt.frame_numbers}
    frames = []
    for index, image in read_frames(video, wanted):
        prepared = detector.preprocess([image])
        output = detector.infer(prepared.tensor)
        frames.append((index + 1, output, PreparedBatch(np.empty(0, np.float32), prepared.boxes), *image.shape[1::-1]))
        if len(frames) % 10 == 0 or len(frames) == len(wanted):
            sys.stderr.write(f"\r {video.name}: inferred {len(frames)}/{len(wanted)} frames   ")
    sys.stderr.write("\n")
    if not frames:
        raise GroundTruthError(f"no frame of {video} has ground truth (frames {gt.frame_numbers[:3]}...)")
    seen = [f[0] for f in frames]
    return ClipCache(subset(gt, seen), gt.fps or video_fps(video), frames)


def class_pairs(gt: GroundTruth, model_names: tuple[str, ...]) -> list[tuple[int, int]]:
    missing = [n for n in gt.class_names if n not in model_names]
    if missing:
        raise GroundTruthError(f"ground-truth classes {missing} are not the model's classes; rename them in the labels")
    return [(i, model_names.index(n)) for i, n in enumerate(gt.class_names)]


def threshold_sweep(gt: GroundTruth, preds: dict[int, Detections], model_names: tuple[str, ...]) -> list[Point]:
    """P/R/F1 (summed over classes, IoU 0.5) at every confidence of CONFS, from one matching."""
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
    points = []
    for conf in CONFS:
        above = s >= conf
        tp, fp = int((t & above).sum()), int((~t & ~g & above).sum())
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / gt_count if gt_count else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        points.append(Point(conf, 0.0, precision, recall, f1))
    return points


def best_point(points: list[Point], objective: str, target_precision: float) -> tuple[Point, str]:
    if objective == "precision":
        reaching = [p for p in points if p.precision >= target_precision]
        if reaching:
            return max(reaching, key=lambda p: (p.recall, p.precision, p.conf)), "reached"
        return max(points, key=lambda p: (p.precision, p.recall)), "not reached: highest precision shown"
    # On a short clip the F1 curve is flat near its top and its highest grid point is partly noise:
    # the middle of the plateau (points within PLATEAU_F1 of the best) generalises better than a peak.
    top = max(p.f1 for p in points)
    plateau = [p for p in points if p.f1 >= top - PLATEAU_F1]
    conf, iou = float(np.median([p.conf for p in plateau])), float(np.median([p.iou for p in plateau]))
    chosen = min(plateau, key=lambda p: (abs(p.conf - conf), abs(p.iou - iou), -p.f1))
    return chosen, f"middle of the F1 plateau (best {top:.3f}, {len(plateau)} points within {PLATEAU_F1})"


# ---------------------------------------------------------------------------------------------- rules


def simulate_alerts(
    config: VigilConfig, target: EvalTarget, rule: RuleConfig, cache: ClipCache, preds: dict[int, Detections],
    class_names: tuple[str, ...],
) -> list[FiredAlert]:  # fmt: skip
    """The aggregator's engine on records built from `preds`; alerts at the frame they started."""
    from alerts.engine import AlertEngine

    alerts_cfg = config.alerts.model_copy(update={"rules": [rule.model_copy(update={"cameras": [target.camera.id]})]})
    engine = AlertEngine(alerts_cfg, [target.camera])
    sizes = {n: (w, h) for n, _, _, w, h in cache.frames}
    fired: list[FiredAlert] = []
    base_ns = 1_700_000_000 * NS
    for number in sorted(preds):
        dets = preds[number]
        capture = base_ns + round((number - 1) * NS / cache.fps)
        width, height = sizes[number]
        record = DetectionsRecord(
            camera_id=target.camera.id,
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


def rule_sweep(
    config: VigilConfig, target: EvalTarget, cache: ClipCache, preds: dict[int, Detections],
    class_names: tuple[str, ...], full_gt: GroundTruth,
) -> list[RulePoint]:  # fmt: skip
    assert target.rule is not None
    gt_events = ground_truth_events(full_gt, target.zone, target.rule, cache.fps)
    points = []
    for min_frames in MIN_FRAMES:
        for dwell in MIN_DWELL_S:
            rule = target.rule.model_copy(update={"min_frames": min_frames, "min_dwell_s": dwell})
            points.append(rule_point(config, target, rule, cache, preds, class_names, full_gt, gt_events))
    return points


def rule_point(
    config: VigilConfig, target: EvalTarget, rule: RuleConfig, cache: ClipCache, preds: dict[int, Detections],
    class_names: tuple[str, ...], full_gt: GroundTruth, gt_events: Any,
) -> RulePoint:  # fmt: skip
    fired = simulate_alerts(config, target, rule, cache, preds, class_names)
    scores = match_events(full_gt, gt_events, fired, cache.fps)
    precision = len({a.alert_id for _, a in scores.matched}) / len(fired) if fired else (0.0 if gt_events else 1.0)
    recall = scores.event_recall
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return RulePoint(rule.min_frames, rule.min_dwell_s, recall, precision, f1, len(fired))


# ---------------------------------------------------------------------------------------------- result


@dataclass
class TuneResult:
    video: str
    objective: str
    status: str
    default: Point
    tuned: Point
    rule: str | None = None
    default_rule: RulePoint | None = None
    tuned_rule: RulePoint | None = None
    check: dict[str, Any] = field(default_factory=dict)

    def snippet(self) -> str:
        lines = ["detect:", f"  conf_threshold: {self.tuned.conf}", f"  iou_threshold: {self.tuned.iou}"]
        if self.rule is not None and self.tuned_rule is not None:
            lines += [
                "alerts:",
                "  rules:",
                f"    - name: {self.rule}",
                f"      min_frames: {self.tuned_rule.min_frames}",
                f"      min_dwell_s: {self.tuned_rule.min_dwell_s}",
            ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def tune(
    config: VigilConfig, video: Path, gt: GroundTruth, model: str | None = None, objective: str = "f1",
    target_precision: float = 0.9, camera: str | None = None, rule: str | None = None,
    check: tuple[Path, GroundTruth] | None = None,
) -> TuneResult:  # fmt: skip
    from detect.detector import Detector

    detector = Detector.from_config(config.detect, model, conf=min(CONFS))
    names = tuple(detector.class_names)
    cache = cache_clip(detector, video, gt)
    check_alignment(gt, cache.detections(detector, min(CONFS), config.detect.iou_threshold), names, "model")
    points: list[Point] = []
    for iou in IOUS:
        preds = cache.detections(detector, min(CONFS), iou)
        points += [Point(p.conf, iou, p.precision, p.recall, p.f1) for p in threshold_sweep(cache.gt, preds, names)]
    best, status = best_point(points, objective, target_precision)
    d = config.detect
    default_preds = cache.detections(detector, d.conf_threshold, d.iou_threshold)
    default_scores = score_detections(cache.gt, default_preds, names, d.conf_threshold).overall
    default = Point(
        d.conf_threshold, d.iou_threshold, default_scores.precision, default_scores.recall, default_scores.f1
    )
    result = TuneResult(str(video), objective, status, default, best)
    target = choose_target(config, str(video), camera, rule)
    tuned_preds = cache.detections(detector, best.conf, best.iou)
    if target.rule is not None:
        gt_events = ground_truth_events(gt, target.zone, target.rule, cache.fps)
        rules = rule_sweep(config, target, cache, tuned_preds, names, gt)
        result.rule = target.rule.name
        result.tuned_rule = max(rules, key=lambda r: (round(r.event_f1, 9), r.alert_precision, -r.min_frames))
        result.default_rule = rule_point(config, target, target.rule, cache, default_preds, names, gt, gt_events)
    if check is not None:
        result.check = check_clip(config, detector, target, result, *check)
    return result


def check_clip(
    config: VigilConfig, detector: Any, target: EvalTarget, result: TuneResult, video: Path, gt: GroundTruth
) -> dict[str, Any]:
    """Scores of the default and the tuned settings on another clip (full pycocotools scoring)."""
    names = tuple(detector.class_names)
    cache = cache_clip(detector, video, gt)
    out: dict[str, Any] = {"video": str(video)}
    for label, point, rule_point_ in (
        ("default", result.default, result.default_rule),
        ("tuned", result.tuned, result.tuned_rule),
    ):
        preds = cache.detections(detector, point.conf, point.iou)
        overall = score_detections(cache.gt, preds, names, point.conf).overall
        entry: dict[str, Any] = {"precision": overall.precision, "recall": overall.recall, "f1": overall.f1}
        if target.rule is not None and rule_point_ is not None:
            rule = target.rule.model_copy(
                update={"min_frames": rule_point_.min_frames, "min_dwell_s": rule_point_.min_dwell_s}
            )
            gt_events = ground_truth_events(gt, target.zone, target.rule, cache.fps)
            entry["event_f1"] = rule_point(config, target, rule, cache, preds, names, gt, gt_events).event_f1
        out[label] = entry
    return out


def tune_cli(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    video = Path(args.video)
    gt = load_ground_truth(args.gt, args.gt_format, video, args.gt_offset, config.class_names())
    check = None
    if bool(args.check_video) != bool(args.check_gt):
        print("vigil tune: --check-video and --check-gt go together", file=sys.stderr)
        return 2
    if args.check_video:
        check_video = Path(args.check_video)
        check = (check_video, load_ground_truth(args.check_gt, args.gt_format, check_video, None, config.class_names()))
    result = tune(
        config, video, gt, args.model, args.objective, args.target_precision, args.camera, args.rule, check
    )  # fmt: skip
    t, d = result.tuned, result.default
    print(f"# vigil tune on {video.name}, objective {result.objective} ({result.status})")
    print(f"# tuned:   P {t.precision:.3f} R {t.recall:.3f} F1 {t.f1:.3f} (conf {t.conf}, iou {t.iou})")
    print(f"# default: P {d.precision:.3f} R {d.recall:.3f} F1 {d.f1:.3f} (conf {d.conf}, iou {d.iou})")
    if result.tuned_rule is not None and result.default_rule is not None:
        tr, dr = result.tuned_rule, result.default_rule
        print(
            f"# rule {result.rule}: event F1 {tr.event_f1:.3f} (recall {tr.event_recall:.3f}, alert precision "
            f"{tr.alert_precision:.3f}); default {dr.event_f1:.3f}"
        )
    for label in ("default", "tuned"):
        if label in result.check:
            c = result.check[label]
            extra = f", event F1 {c['event_f1']:.3f}" if "event_f1" in c else ""
            print(f"# check {Path(result.check['video']).name} {label}: P {c['precision']:.3f} "
                  f"R {c['recall']:.3f} F1 {c['f1']:.3f}{extra}")  # fmt: skip
    print(result.snippet())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    return 0
