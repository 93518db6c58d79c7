"""`vigil eval`: score the pipeline's run of a recording, and the bare model on the same frames.

CLI wiring (imports the detect and ingest stages): the scoring itself is `scoring.py` and `events.py`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from vigil.config import (
    AlertsConfig,
    CameraConfig,
    CameraObjectsConfig,
    ObjectsConfig,
    TrackerConfig,
    VigilConfig,
    camera_objects,
)
from vigil.contracts import AlertRecord, DetectionsRecord
from vigil.detections import Detections
from vigil.eval.controls import ALL, ControlsReport, active_controls, box_effects, without
from vigil.eval.events import (
    EventScores,
    FiredAlert,
    FrameObservation,
    classify_false_alerts,
    explain_misses,
    ground_truth_events,
    match_events,
)
from vigil.eval.groundtruth import GroundTruth, load_coco, load_mot, map_classes
from vigil.eval.labels_match import LabelMismatchError, Recording, check_matching
from vigil.eval.labels_yolo import load_yolo
from vigil.eval.pipeline import EvalError, EvalTarget, PipelineResult
from vigil.eval.report import EvalReport, LatencyStats
from vigil.eval.scoring import DetectionScores, score_detections
from vigil.eval.tracking import TrackingScores, score_tracking
from vigil.imagefolder import list_images

if TYPE_CHECKING:
    from alerts.engine import FrameTrace


def describe_recording(video: Path) -> Recording:
    """What labels are matched against, as replay will read it: an image folder's file names in
    natural order, or a video's frame count (the container's) and frame size (its first frame)."""
    from ingest.sources import ReplaySource

    if video.is_dir():
        names = tuple(p.name for p in list_images(video))
        return Recording(str(video), names, len(names))
    source = ReplaySource(str(video), realtime=False)
    source.open()
    try:
        first = source.read()
        height, width = first.image.shape[:2] if first is not None else (None, None)
    finally:
        source.close()
    return Recording(str(video), None, source.total_frames, width, height)


def load_ground_truth(
    path: str,
    fmt: str | None,
    video: Path | None = None,
    offset: int | None = None,
    model_names: tuple[str, ...] | None = None,
) -> GroundTruth:
    """MOT `gt.txt`, COCO JSON or a YOLO label folder (the format follows the path when not given),
    placed on the frames of `video` and shifted by `offset` frames. With the video, labels of which
    fewer than 90 % find a frame are refused (`LabelMismatchError`); with the model's class names,
    classes are mapped to them by name and those the model lacks are listed once and not scored."""
    kind = fmt or ("coco" if path.lower().endswith(".json") else "yolo" if Path(path).is_dir() else "mot")
    recording = describe_recording(video) if video is not None else None
    shift = offset or 0
    if kind == "yolo":
        if recording is None:
            raise EvalError("YOLO labels are fractions of the image: give the recording they label (--video)")
        gt = load_yolo(path, recording, shift)
    else:
        gt = load_coco(path, recording, shift) if kind == "coco" else load_mot(path, recording=recording, offset=shift)
    matching = gt.matching
    assert matching is not None  # every loader records how it matched
    matching.offset_given = offset is not None
    if recording is not None:
        check_matching(matching, recording)
    if model_names is not None:
        gt = map_classes(gt, model_names)
    sys.stderr.write(f"labels: {matching.summary()}\n")
    if matching.unknown_classes:
        listed = ", ".join(f"{name} ({n} boxes)" for name, n in matching.unknown_classes.items())
        sys.stderr.write(f"labels: not scored, the model has no such class: {listed}\n")
    return gt


@contextmanager
def refusal_report(out: Path) -> Iterator[None]:
    """Labels refused inside still leave a report.json with the match counts and the reason."""
    try:
        yield
    except LabelMismatchError as exc:
        out.mkdir(parents=True, exist_ok=True)
        report = {"error": str(exc), "ground_truth_matching": exc.matching.to_json()}
        (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        raise


def subset(gt: GroundTruth, numbers: list[int]) -> GroundTruth:
    """The ground truth of the frames that were sent to detection (all of them unless --fps samples)."""
    wanted = [n for n in numbers if n in set(gt.frame_numbers)]
    frames = {n: gt.frames[n] for n in wanted if n in gt.frames}
    return GroundTruth(frames, gt.class_names, gt.width, gt.height, gt.fps, gt.source, wanted, gt.matching)


def to_gt_pixels(dets: Detections, width: int, height: int, gt: GroundTruth) -> Detections:
    """Boxes of a (possibly downscaled, camera.max_width) frame in the labelled image's pixels."""
    if gt.width is None or gt.height is None or (gt.width, gt.height) == (width, height):
        return dets
    scale = np.array([gt.width / width, gt.height / height] * 2, np.float32)
    return Detections(dets.xyxy * scale, dets.confidence, dets.class_id, dets.tracker_id, dets.data)


def pipeline_predictions(result: PipelineResult, gt: GroundTruth) -> dict[int, Detections]:
    """Ground-truth frame number (frame_index + 1) -> detections, in ground-truth pixels."""
    return {
        index + 1: to_gt_pixels(r.detections, r.width, r.height, gt) for index, r in result.by_frame_index().items()
    }


def pipeline_tracking(
    result: PipelineResult,
    tracker: TrackerConfig,
    gt: GroundTruth,
    class_names: tuple[str, ...],
    objects: CameraObjectsConfig | None = None,
) -> TrackingScores | None:
    """MOTA, IDF1, HOTA... of the pipeline's tracks against the ground-truth identities (None when the
    labels have none). The tracks are the aggregator's tracker (same code, same config) re-run here on
    exactly what the aggregator was relayed: each frame's detections cut at the threshold, less what
    the camera's object filters and masks (`objects`, merged) remove, at the capture time it saw, in
    frame order; deterministic, so the figures do not depend on the run's timing."""
    from alerts.filters import Prefilter
    from alerts.tracker import ByteTracker

    if not any(b.tracker_id is not None and (b.tracker_id >= 0).any() for b in gt.frames.values()):
        return None
    classes = {gt_index: class_names.index(name) for gt_index, name in enumerate(gt.class_names)}
    wanted = np.array(sorted(classes.values()), np.int32)
    run = ByteTracker(tracker)
    prefilter = Prefilter(objects or CameraObjectsConfig())
    tracks: dict[int, Detections] = {}
    for key, record in sorted(result.records.items(), key=lambda kv: (kv[1].frame_index or 0, kv[0])):
        if record.frame_index is None:
            continue
        d = record.detections
        d = Detections(d.xyxy, d.confidence, d.class_id, data={"class_name": np.asarray(record.class_names, object)})
        kept, _ = prefilter.apply(d[d.confidence >= result.threshold], (record.width, record.height))
        tracked = run.update(kept, result.relayed_capture_ns.get(key, record.capture_ns))
        tracked = tracked[np.isin(tracked.class_id, wanted)]
        tracks[record.frame_index + 1] = to_gt_pixels(tracked, record.width, record.height, gt)
    truth = {}
    for number, boxes in gt.frames.items():
        mapped = np.array([classes[int(c)] for c in boxes.class_id], np.int32)
        truth[number] = Detections(boxes.xyxy, boxes.confidence, mapped, boxes.tracker_id, boxes.data)
    labelled = set(gt.frame_numbers)
    return score_tracking(truth, tracks, [n for n in sorted(tracks) if n in labelled])


def fired_alerts(
    result: PipelineResult, target: EvalTarget, gt: GroundTruth, alerts: list[AlertRecord] | None = None
) -> list[FiredAlert]:
    """The rule's `started` alerts (the run's, or `alerts` of an in-process re-run on its records),
    each at the frame it started on (its frame ref; else its capture time)."""
    if target.rule is None:
        return []
    alerts = result.alerts if alerts is None else alerts
    by_key = {key: r for key, r in result.records.items()}
    by_capture = {result.relayed_capture_ns.get(k, r.capture_ns): r for k, r in result.records.items()}
    ended = {a.alert_id: a for a in alerts if a.event == "ended"}
    fired = []
    for alert in alerts:
        if alert.event != "started" or alert.rule != target.rule.name or alert.camera_id != target.camera.id:
            continue
        ref = alert.frame
        record = by_key.get(f"{ref.topic}/{ref.partition}/{ref.offset}") or by_capture.get(alert.first_seen_ns)
        if record is None or record.frame_index is None:
            raise EvalError(f"alert {alert.alert_id} refers to frame {ref} that has no detections record")
        box = to_gt_pixels(
            Detections(np.array([alert.box], np.float32), np.ones(1, np.float32), np.zeros(1, np.int32)),
            record.width,
            record.height,
            gt,
        ).xyxy[0]
        end = ended.get(alert.alert_id)
        end_record = by_capture.get(end.last_seen_ns) if end is not None else None
        fired.append(
            FiredAlert(
                alert.alert_id,
                record.frame_index + 1,
                (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
                end_record.frame_index + 1 if end_record is not None and end_record.frame_index is not None else None,
            )
        )
    return fired


def relayed_records(result: PipelineResult) -> list[DetectionsRecord]:
    """The records exactly as the relay gave them to the aggregator: cut at the threshold, on the
    footage's timeline, in frames-topic order."""
    out = []
    for key, r in sorted(result.records.items(), key=lambda kv: (kv[1].frame.partition, kv[1].frame.offset)):
        keep = r.detections.confidence >= result.threshold
        names = tuple(n for n, k in zip(r.class_names, keep.tolist(), strict=True) if k)
        capture_ns = result.relayed_capture_ns.get(key, r.capture_ns)
        out.append(replace(r, capture_ns=capture_ns, detections=r.detections[keep], class_names=names))
    return out


def rerun_engine(
    alerts: AlertsConfig,
    camera: CameraConfig,
    result: PipelineResult,
    objects: ObjectsConfig | None = None,
    trace: bool = False,
) -> tuple[list[AlertRecord], list[FrameTrace]]:
    """The aggregator's engine in-process on the run's records, as the relay gave them to it
    (deterministic: the same alerts): the alerts and, with `trace`, what it made of every frame."""
    from alerts.engine import AlertEngine

    engine = AlertEngine(alerts, [camera], trace=trace, objects=objects)
    fired: list[AlertRecord] = []
    for record in relayed_records(result):
        fired += engine.process(record, record.capture_ns)
    return fired, engine.trace or []


def replay_engine(
    alerts: AlertsConfig,
    target: EvalTarget,
    result: PipelineResult,
    gt: GroundTruth,
    objects: ObjectsConfig | None = None,
) -> tuple[dict[int, FrameObservation], list[AlertRecord]]:
    """Re-run the aggregator's engine, tracing what it made of every frame; observations keyed by
    ground-truth frame (outcomes and alert ids: the target rule's, none without one)."""
    fired, trace = rerun_engine(alerts, target.camera, result, objects, trace=True)
    observations = {}
    sizes = {r.frame_index: (r.width, r.height) for r in result.records.values()}
    rule = target.rule.name if target.rule is not None else ""
    for step in trace:
        if step.frame_index is None:
            continue
        width, height = sizes[step.frame_index]
        observations[step.frame_index + 1] = FrameObservation(
            step.frame_index + 1,
            to_gt_pixels(step.detections, width, height, gt),
            to_gt_pixels(step.tracked, width, height, gt),
            list(step.outcomes.get(rule, [])),
            list(step.alert_ids.get(rule, [])),
            list(step.removed),
        )
    return observations, fired


def controls_report(
    alerts: AlertsConfig,
    objects: ObjectsConfig,
    target: EvalTarget,
    result: PipelineResult,
    gt: GroundTruth,
    observations: dict[int, FrameObservation],
    events: EventScores | None,
    fps: float,
    class_names: tuple[str, ...],
) -> ControlsReport | None:
    """What each object filter, the score threshold and each object mask of the camera removed (None
    when it has none): boxes from the traced run, alerts from a re-run with that control off."""
    merged = camera_objects(objects, target.camera.objects)
    controls = active_controls(merged)
    if not controls:
        return None
    total, kept, effects = box_effects(gt, observations, controls)
    if events is not None:
        for control, effect in effects.items():
            camera = target.camera.model_copy(update={"objects": without(merged, control)})
            alerts_off, _ = rerun_engine(alerts, camera, result)
            effect.compare(
                events, match_events(gt, events.gt_events, fired_alerts(result, target, gt, alerts_off), fps)
            )
    # What the tracker saw: the relayed boxes (already cut at the detection threshold) less those removed.
    after = {n: o.detections[np.asarray(o.removed, object) == ""] for n, o in observations.items()}
    scores = score_detections(subset(gt, sorted(observations)), after, class_names, 0.0).overall
    report = ControlsReport(total, kept, [effects[c] for c in [*controls, ALL]])
    report.kept_precision, report.kept_recall, report.kept_f1 = scores.precision, scores.recall, scores.f1
    return report


def diagnose(
    scores: EventScores, target: EvalTarget, observations: dict[int, FrameObservation], fired: list[AlertRecord],
    gt: GroundTruth, fps: float,
) -> list[str]:  # fmt: skip
    """Fill `scores.missed` and `scores.false` from the traced re-run; notes on how (and whether the
    re-run agreed with the aggregator)."""
    assert target.rule is not None
    scores.false = classify_false_alerts(gt, scores)
    scores.missed = explain_misses(gt, scores, observations, target.rule, fps)
    ours = sorted(a.alert_id for a in fired if a.event == "started" and a.rule == target.rule.name)
    theirs = sorted(a.alert_id for a in scores.alerts)
    if ours == theirs:
        return [f"Why events were missed: the aggregator's engine re-run in-process on the run's {len(observations)} "
                "records, which reproduced its alerts exactly."]  # fmt: skip
    return [f"Why events were missed: the in-process re-run of the engine fired {len(ours)} alerts where the "
            f"aggregator fired {len(theirs)} (an idle sweep or a restart during the run?); reasons are approximate."]  # fmt: skip


def read_frames(video: Path, indices: set[int] | None = None) -> Iterator[tuple[int, npt.NDArray[np.uint8]]]:
    """(frame_index, BGR image) of a recording, decoded as the replay source decodes it."""
    from ingest.sources import ReplaySource

    source = ReplaySource(str(video), realtime=False)
    source.open()
    try:
        while (frame := source.read()) is not None:
            if indices is None or frame.frame_index in indices:
                yield frame.frame_index, frame.image
    finally:
        source.close()


def bare_predictions(
    config: VigilConfig,
    model: str | None,
    eval_conf: float,
    video: Path,
    indices: set[int],
    gt: GroundTruth,
    progress: Callable[[int], None] | None = None,
) -> tuple[dict[int, Detections], str]:
    """The model called directly on the decoded frames (no JPEG, no Kafka): GT frame -> detections."""
    from detect.detector import Detector

    detector = Detector.from_config(config.detect, model, conf=eval_conf)
    out: dict[int, Detections] = {}
    batch: list[tuple[int, npt.NDArray[np.uint8]]] = []

    def run() -> None:
        for (index, image), dets in zip(batch, detector([im for _, im in batch]), strict=True):
            out[index + 1] = to_gt_pixels(dets, image.shape[1], image.shape[0], gt)
        batch.clear()
        if progress is not None:
            progress(len(out))

    for item in read_frames(video, indices):
        batch.append(item)
        if len(batch) >= config.detect.batch_size:
            run()
    if batch:
        run()
    return out, f"{detector.manifest.name} ({detector.manifest.version})"


def label_notes(gt: GroundTruth) -> list[str]:
    """What the report must say about the labels: how they were matched, and what was left out."""
    matching = gt.matching
    if matching is None:
        return []
    notes = [f"Labels: {matching.summary()}."]
    if matching.unknown_classes:
        listed = ", ".join(f"{name} ({n} boxes)" for name, n in matching.unknown_classes.items())
        notes.append(f"Label classes the model does not have, not scored: {listed}.")
    if matching.alignment is not None and "note" in matching.alignment:
        notes.append(matching.alignment["note"])
    if not matching.identities:
        notes.append(
            "The labels carry no track identities (YOLO, COCO without track_id): alert results are not meaningful."
        )
    return notes


@dataclass
class Scored:
    pipeline: DetectionScores
    bare: DetectionScores | None


def build_report(
    video: Path,
    gt_path: str,
    gt: GroundTruth,
    fps: float,
    model_name: str,
    target: EvalTarget,
    result: PipelineResult,
    bare: dict[int, Detections] | None,
    class_names: tuple[str, ...],
    alerts: AlertsConfig | None = None,
    objects: ObjectsConfig | None = None,
) -> EvalReport:
    """The report of a run. `alerts` (the aggregator's section) enables the why-missed diagnostics
    and, with the global `objects` (the camera's own are the target's), what each object filter
    and mask removed."""
    objects = objects or ObjectsConfig()
    observations, refired = replay_engine(alerts, target, result, gt, objects) if alerts is not None else ({}, [])
    numbers = sorted(index + 1 for index in result.by_frame_index())
    scored_gt = subset(gt, numbers)
    pipeline = score_detections(scored_gt, pipeline_predictions(result, gt), class_names, result.threshold)
    bare_scores = score_detections(scored_gt, bare, class_names, result.threshold) if bare is not None else None
    events = None
    notes = [
        f"AP uses every box the detector kept at the evaluation threshold; precision/recall/F1 use boxes with "
        f"confidence >= detect.conf_threshold = {result.threshold}.",
    ]
    if target.rule is not None:
        # The frames the pipeline saw: with --fps, min_frames counts sampled frames, as the rule does.
        gt_events = ground_truth_events(gt, target.zone, target.rule, fps, numbers)
        events = match_events(gt, gt_events, fired_alerts(result, target, gt), fps)
        notes.append(f"Alerts scored for rule {target.rule.name!r} (zone {target.zone.name if target.zone else '-'}).")
        if alerts is not None:
            notes += diagnose(events, target, observations, refired, gt, fps)
    else:
        notes.append("The config has no alert rule: alert-level results are not computed.")
    controls = (
        controls_report(alerts, objects, target, result, gt, observations, events, fps, class_names)
        if alerts is not None
        else None
    )
    if controls is not None:
        notes.append(
            "Object filters and masks: boxes counted in the aggregator's engine re-run (each under the first control "
            "that removed it); alerts from a re-run with each control switched off."
        )
    if len(numbers) != len(gt.frame_numbers):
        notes.append(f"{len(numbers)} of the {len(gt.frame_numbers)} labelled frames were sent to detection.")
    notes += label_notes(gt)
    # Capture (of the frame the alert started on) to the alert record's Kafka timestamp.
    started = [
        (result.alert_time_ns[a.webhook_id] - record.capture_ns) / 1e6
        for a in result.alerts
        if a.event == "started" and a.webhook_id in result.alert_time_ns
        for record in [result.records.get(f"{a.frame.topic}/{a.frame.partition}/{a.frame.offset}")]
        if record is not None
    ]
    latencies = [(r.produced_ns - r.capture_ns) / 1e6 for r in result.records.values()]
    return EvalReport(
        video=str(video),
        ground_truth=gt_path,
        model=model_name,
        frames_expected=result.frames_published,
        frames_scored=len(scored_gt.frame_numbers),
        threshold=result.threshold,
        pipeline=pipeline,
        bare=bare_scores,
        events=events,
        capture_to_detection=LatencyStats.of(latencies),
        capture_to_alert=LatencyStats.of(started),
        pipeline_fps=len(result.records) / result.wall_s,
        wall_s=result.wall_s,
        notes=notes,
        ground_truth_matching=gt.matching.to_json() if gt.matching is not None else None,
        tracking=pipeline_tracking(
            result,
            alerts.tracker if alerts is not None else TrackerConfig(),
            gt,
            class_names,
            camera_objects(objects, target.camera.objects),
        ),
        controls=controls,
    )


def progress_line(label: str) -> Callable[[int, int | None], None]:
    """Plain stderr text updated in place: '\\r<label> 40/71 frames'."""

    last: list[tuple[int, int | None]] = []

    def show(done: int, total: int | None) -> None:
        # Every 10th frame and the last: a redirected stderr gets a readable log, not every frame.
        if last and (last[0] == (done, total) or (done % 10 and done != total)):
            return
        last[:] = [(done, total)]
        sys.stderr.write(f"\r {label} {done}/{total if total is not None else '?'} frames   ")
        sys.stderr.flush()

    return show


def video_fps(video: Path) -> float:
    """The recording's true frame rate as replay sees it (seqinfo.ini, else the container)."""
    from ingest.sources import ReplaySource

    source = ReplaySource(str(video), realtime=False)
    source.open()
    source.close()
    return source.fps
