"""Helpers shared by the detect tests (not fixtures: plain functions)."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from detect.detector import Detector

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"
FOOTAGE = SHARED / "footage" / "TUD-Campus" / "TUD-Campus.mp4"


def ultralytics_assets() -> Path:
    """bus.jpg / zidane.jpg inside the installed ultralytics wheel, found without importing ultralytics."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin, "ultralytics is not installed (pip install 'vigil[export]')"
    return Path(spec.origin).parent / "assets"


def read_frames(path: Path = FOOTAGE, count: int | None = None, step: int = 1) -> list[npt.NDArray[np.uint8]]:
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), f"cannot open {path}"
    frames: list[npt.NDArray[np.uint8]] = []
    index = 0
    try:
        while count is None or len(frames) < count:
            ok, frame = capture.read()
            if not ok:
                break
            if index % step == 0:
                frames.append(frame)
            index += 1
    finally:
        capture.release()
    return frames


def bomb_jpeg(width: int, height: int) -> bytes:
    """A decompression bomb: a 64x64 JPEG (~4 KB) whose frame header (SOF0) declares width x height."""
    small = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    sof = small.index(b"\xff\xc0")
    return small[: sof + 5] + struct.pack(">HH", height, width) + small[sof + 9 :]


def offline_ultralytics() -> None:
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"


def iou_matrix(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64)[:, None, :], b.astype(np.float64)[None, :, :]
    w = np.clip(np.minimum(a64[..., 2], b64[..., 2]) - np.maximum(a64[..., 0], b64[..., 0]), 0, None)
    h = np.clip(np.minimum(a64[..., 3], b64[..., 3]) - np.maximum(a64[..., 1], b64[..., 1]), 0, None)
    inter = w * h
    area_a = (a64[..., 2] - a64[..., 0]) * (a64[..., 3] - a64[..., 1])
    area_b = (b64[..., 2] - b64[..., 0]) * (b64[..., 3] - b64[..., 1])
    result: npt.NDArray[np.float64] = inter / np.maximum(area_a + area_b - inter, 1e-9)
    return result


def person_recall_ap50(detector: Detector, frames: list[npt.NDArray[np.uint8]], clip: str) -> tuple[float, float]:
    """Recall and AP50 of persons (conf 0.25) on a shared clip's frames, in batches of 4, scored in the labels' pixels
    (the frames may be smaller than the labelled images)."""
    from vigil.eval.groundtruth import load_mot
    from vigil.eval.run import to_gt_pixels
    from vigil.eval.scoring import score_detections

    gt = load_mot(SHARED / "footage" / clip / "gt.txt")
    predictions = {}
    for start in range(0, len(frames), 4):
        chunk = frames[start : start + 4]
        for offset, dets in enumerate(detector(chunk)):
            image = chunk[offset]
            predictions[start + offset + 1] = to_gt_pixels(dets, image.shape[1], image.shape[0], gt)
    person = score_detections(gt, predictions, detector.class_names, 0.25).per_class["person"]
    return person.recall, person.ap50
