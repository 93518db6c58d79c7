"""Frame-level detection scores against ground truth: COCO AP (pycocotools) and P/R/F1 at a threshold."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vigil.detections import Detections
from vigil.eval.groundtruth import GroundTruth, GroundTruthError
from vigil.geometry import box_iou


@dataclass
class ClassScores:
    name: str
    ap50: float
    ap50_95: float
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    gt_boxes: int
    pr_recall: list[float] = field(default_factory=list)
    pr_precision: list[float] = field(default_factory=list)


@dataclass
class DetectionScores:
    threshold: float
    iou: float
    frames: int
    per_class: dict[str, ClassScores]

    @property
    def overall(self) -> ClassScores:
        """Mean AP over classes; P/R/F1 from the summed counts."""
        scores = list(self.per_class.values())
        tp, fp, fn = (sum(getattr(s, k) for s in scores) for k in ("tp", "fp", "fn"))
        precision, recall, f1 = _prf(tp, fp, fn)
        return ClassScores(
            name="all",
            ap50=float(np.mean([s.ap50 for s in scores])) if scores else 0.0,
            ap50_95=float(np.mean([s.ap50_95 for s in scores])) if scores else 0.0,
            precision=precision,
            recall=recall,
            f1=f1,
            tp=tp,
            fp=fp,
            fn=fn,
            gt_boxes=sum(s.gt_boxes for s in scores),
        )


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def match_frame(
    gt: Detections, pred: Detections, iou_threshold: float
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_], int]:
    """Greedy matching by descending score. Returns (true-positive mask over predictions, ignored
    mask over predictions (they matched an ignore region), number of missed ground-truth boxes)."""
    ignore = gt.data["ignore"] if "ignore" in gt.data else np.zeros(len(gt), bool)
    real, regions = gt.xyxy[~ignore], gt.xyxy[ignore]
    order = np.argsort(-pred.confidence, kind="stable")
    iou = box_iou(pred.xyxy[order], real)
    taken = np.zeros(len(real), bool)
    tp = np.zeros(len(pred), bool)
    for rank, index in enumerate(order):
        if len(real) == 0:
            break
        candidates = np.where(~taken & (iou[rank] >= iou_threshold))[0]
        if candidates.size:
            best = candidates[np.argmax(iou[rank, candidates])]
            taken[best] = True
            tp[index] = True
    ignored = np.zeros(len(pred), bool)
    if len(regions):
        # A detection on an ignore region is neither right nor wrong: COCO's crowd rule (intersection
        # over the detection's own area), which also covers partly visible people.
        area = pred.area()[:, None]
        lt = np.maximum(pred.xyxy[:, None, :2], regions[None, :, :2])
        rb = np.minimum(pred.xyxy[:, None, 2:], regions[None, :, 2:])
        overlap = np.prod(np.clip(rb - lt, 0, None), axis=2) / np.maximum(area, 1e-9)
        ignored = ~tp & (overlap >= iou_threshold).any(axis=1)
    return tp, ignored, int((~taken).sum())


def _class_map(gt: GroundTruth, model_names: tuple[str, ...]) -> dict[int, int]:
    """ground-truth class index -> model class id, by name."""
    mapping = {}
    for gt_index, name in enumerate(gt.class_names):
        if name not in model_names:
            raise GroundTruthError(
                f"ground-truth class {name!r} is not one of the model's classes; rename it in the labels"
            )
        mapping[gt_index] = model_names.index(name)
    return mapping


def score_detections(
    gt: GroundTruth,
    predictions: Mapping[int, Detections],
    model_names: tuple[str, ...],
    threshold: float,
    iou: float = 0.5,
) -> DetectionScores:
    """Score predictions (keyed by ground-truth frame number, boxes in ground-truth pixels).

    AP uses every prediction (whatever its score); P/R/F1 use those with confidence >= threshold.
    Frames without a prediction entry count as frames where nothing was detected."""
    mapping = _class_map(gt, model_names)
    per_class: dict[str, ClassScores] = {}
    for gt_index, model_id in mapping.items():
        name = gt.class_names[gt_index]
        tp = fp = fn = 0
        for frame in gt.frame_numbers:
            truth = gt.boxes(frame)
            truth = truth[truth.class_id == gt_index]
            pred = predictions.get(frame, Detections.empty())
            pred = pred[(pred.class_id == model_id) & (pred.confidence >= threshold)]
            hit, ignored, missed = match_frame(truth, pred, iou)
            tp += int(hit.sum())
            fp += int((~hit & ~ignored).sum())
            fn += missed
        precision, recall, f1 = _prf(tp, fp, fn)
        ap50, ap, pr_recall, pr_precision = coco_ap(gt, predictions, gt_index, model_id)
        per_class[name] = ClassScores(
            name, ap50, ap, precision, recall, f1, tp, fp, fn, tp + fn, pr_recall, pr_precision
        )
    return DetectionScores(threshold, iou, len(gt.frame_numbers), per_class)


def coco_ap(
    gt: GroundTruth, predictions: Mapping[int, Detections], gt_index: int, model_id: int
) -> tuple[float, float, list[float], list[float]]:
    """(AP@0.5, AP@[.5:.95], PR-curve recall, PR-curve precision at IoU 0.5) with pycocotools."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for frame in gt.frame_numbers:
        images.append({"id": frame, "width": gt.width or 0, "height": gt.height or 0})
        truth = gt.boxes(frame)
        for i in np.where(truth.class_id == gt_index)[0]:
            x1, y1, x2, y2 = (float(v) for v in truth.xyxy[i])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": frame,
                    "category_id": 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(truth.data["ignore"][i]),
                }
            )
    results: list[dict[str, Any]] = []
    for frame in gt.frame_numbers:
        pred = predictions.get(frame)
        if pred is None:
            continue
        pred = pred[pred.class_id == model_id]
        for box, score in zip(pred.xyxy.tolist(), pred.confidence.tolist(), strict=True):
            results.append(
                {
                    "image_id": frame,
                    "category_id": 1,
                    "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                    "score": score,
                }
            )
    if not annotations or not results:
        return 0.0, 0.0, [], []
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "c"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(results)
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.maxDets = [1, 10, 300]
        evaluator.evaluate()
        evaluator.accumulate()
    precision = evaluator.eval["precision"][:, :, 0, 0, -1]  # [iou thresholds, recall points]

    def mean_ap(rows: npt.NDArray[np.float64]) -> float:
        valid = rows[rows > -1]
        return float(valid.mean()) if valid.size else 0.0

    curve = precision[0]
    keep = curve > -1
    return (
        mean_ap(precision[0]),
        mean_ap(precision),
        evaluator.params.recThrs[keep].tolist(),
        curve[keep].tolist(),
    )
