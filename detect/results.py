"""The JSON form of one image's detections, shared by `vigil predict --json` and the HTTP API so
both answer exactly alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from detect.detector import Detector
from vigil.detections import Detections


def detections_json(
    detector: Detector, image: npt.NDArray[np.uint8], detections: Detections, source: str
) -> dict[str, Any]:
    return {
        "image": source,
        "width": int(image.shape[1]),
        "height": int(image.shape[0]),
        "model": {"name": detector.manifest.name, "version": detector.manifest.version},
        "boxes": [[round(float(v), 2) for v in box] for box in detections.xyxy],
        "class_ids": [int(c) for c in detections.class_id],
        "class_names": list(detector.names_of(detections)),
        "scores": [round(float(s), 5) for s in detections.confidence],
    }
