"""Class-aware non-maximum suppression in numpy.

Boxes of different classes (and of different images of a batch) never suppress each other: each group is
shifted by a large offset so groups cannot overlap, then one greedy NMS runs over everything — the same trick
as ultralytics and torchvision's `batched_nms`, so one call serves a whole batch.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def nms(
    boxes: npt.NDArray[np.floating], scores: npt.NDArray[np.floating], iou_threshold: float
) -> npt.NDArray[np.intp]:
    """Greedy NMS; returns indices of kept boxes, highest score first. Each step is one vectorised IoU row."""
    if boxes.shape[0] == 0:
        return np.empty((0,), np.intp)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.intp)


def batched_nms(
    boxes: npt.NDArray[np.float32],
    scores: npt.NDArray[np.float32],
    groups: npt.NDArray[np.integer],
    iou_threshold: float,
) -> npt.NDArray[np.intp]:
    """NMS within each group id (class, or image*classes + class); indices of kept boxes, best first."""
    if boxes.shape[0] == 0:
        return np.empty((0,), np.intp)
    # Offset larger than any coordinate span, so boxes of different groups are disjoint.
    span = float(boxes.max() - min(float(boxes.min()), 0.0)) + 1.0
    # float64: with hundreds of groups the offsets reach ~1e6, where float32 would round box edges.
    shifted = boxes.astype(np.float64) + (groups.astype(np.float64) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
