"""Detection-width frames (`cameras[].max_width` at the model's input width) keep the detector's recall.

The lever saves ingest's encode, the broker's bytes and detect's decode on every frame; what it must not cost is
accuracy. Here each labelled frame goes the way it goes in the stack (ingest's `FrameEncoder`, JPEG, decode,
the detector) once at full size and once at 416 wide, and both are scored in the labels' pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from detect.detector import Detector, Thresholds
from ingest.camera import FrameEncoder
from models import Registry
from tests.detect.helpers import SHARED, person_recall_ap50, read_frames


def _published(frames: list[np.ndarray], encoder: FrameEncoder) -> list[np.ndarray]:
    """What detect decodes from the frames topic."""
    out = []
    for frame in frames:
        image, _ = encoder.shape(frame)
        decoded = cv2.imdecode(np.frombuffer(encoder.encode(image), np.uint8), cv2.IMREAD_COLOR)
        assert decoded is not None
        out.append(decoded)
    return out


@pytest.mark.parametrize("clip", ["TUD-Campus", "TUD-Stadtmitte"])
def test_frames_published_at_detection_width_keep_recall(clip: str) -> None:
    frames = read_frames(SHARED / "footage" / clip / f"{clip}.mp4")
    detector = Detector.load(Registry().get("yolox_nano"), intra_op_threads=1, thresholds=Thresholds(0.01, 0.45))
    full = _published(frames, FrameEncoder())
    narrow = _published(frames, FrameEncoder(max_width=416))
    assert full[0].shape == (480, 640, 3) and narrow[0].shape == (312, 416, 3)
    # Both reach the model at the same 416x320 canvas: only the resize and the JPEG differ.
    assert detector.preprocess(full[:1]).tensor.shape == detector.preprocess(narrow[:1]).tensor.shape
    full_recall, full_ap50 = person_recall_ap50(detector, full, clip)
    narrow_recall, narrow_ap50 = person_recall_ap50(detector, narrow, clip)
    assert full_recall > 0.6  # the footage is scored at all
    assert narrow_recall >= full_recall - 0.01, (narrow_recall, full_recall)
    assert narrow_ap50 >= full_ap50 - 0.01, (narrow_ap50, full_ap50)
