"""Drawing on frames: boxes with labels, zone and mask polygons, motion boxes.

Shared by every stage that shows a person what vigil saw: alert snapshots (alerts), the review
service's annotated frames (web) and `vigil predict --save` (detect). Pure pixel work on BGR uint8
arrays, in place; line widths and text scale follow the image size so a 4K frame and a 320 px
thumbnail both stay legible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from vigil.contracts import AlertRecord
from vigil.errors import ContractError
from vigil.imaging import DEFAULT_MAX_PIXELS, decode_image, encode_jpeg

Image = npt.NDArray[np.uint8]
Color = tuple[int, int, int]

# Colour-blind-safe hues (Okabe-Ito), as BGR; a class keeps its colour across frames and stages.
PALETTE: tuple[Color, ...] = (
    (0, 159, 230),  # orange
    (233, 180, 86),  # sky blue
    (115, 158, 0),  # bluish green
    (66, 228, 240),  # yellow
    (178, 114, 0),  # blue
    (0, 94, 213),  # vermillion
    (167, 121, 204),  # reddish purple
)
ZONE_COLOR: Color = (255, 200, 0)
MASK_COLOR: Color = (80, 80, 80)
MOTION_COLOR: Color = (0, 215, 255)


def class_color(class_id: int) -> Color:
    return PALETTE[int(class_id) % len(PALETTE)]


@dataclass(frozen=True)
class Polygon:
    """A named polygon in pixels of the image it is drawn on (zones and masks)."""

    name: str
    points: npt.NDArray[np.float64]
    color: Color = ZONE_COLOR
    fill_alpha: float = 0.15


def _check(image: Image) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ContractError(f"expected a BGR uint8 image of shape (H, W, 3), got {image.shape} {image.dtype}")


def _scale(image: Image) -> tuple[int, float]:
    """Line thickness and font scale for this image size (tuned at 640 px: 2 px lines, 0.5 text)."""
    side = max(image.shape[0], image.shape[1])
    return max(1, round(side / 320)), max(0.35, side / 1280)


def _label(image: Image, text: str, x: int, y: int, color: Color, font_scale: float) -> None:
    """Text on a filled tab above (x, y), or below it when there is no room above."""
    thickness = max(1, round(font_scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
    top = y - h - base - 2
    if top < 0:
        top = y
    cv2.rectangle(image, (x, top), (x + w + 4, top + h + base + 2), color, -1)
    luminance = 0.114 * color[0] + 0.587 * color[1] + 0.299 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(image, text, (x + 2, top + h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale, ink, thickness, cv2.LINE_AA)


def draw_boxes(
    image: Image,
    xyxy: npt.ArrayLike,
    labels: Sequence[str],
    class_ids: Sequence[int] | npt.NDArray[np.integer] | None = None,
    color: Color | None = None,
) -> Image:
    """Boxes (N, 4) in image pixels, each with its label; colour by class unless `color` is given."""
    _check(image)
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if len(labels) != len(boxes):
        raise ContractError(f"draw_boxes got {len(boxes)} boxes but {len(labels)} labels")
    ids = np.zeros(len(boxes), np.int64) if class_ids is None else np.asarray(class_ids, np.int64)
    thickness, font_scale = _scale(image)
    for box, label, class_id in zip(boxes, labels, ids, strict=True):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        tone = color or class_color(int(class_id))
        cv2.rectangle(image, (x1, y1), (x2, y2), tone, thickness)
        if label:
            _label(image, label, max(0, x1), max(0, y1), tone, font_scale)
    return image


def draw_polygons(image: Image, polygons: Sequence[Polygon]) -> Image:
    """Outlined, lightly filled polygons with their names at the first vertex."""
    _check(image)
    thickness, font_scale = _scale(image)
    for polygon in polygons:
        points = np.round(np.asarray(polygon.points, np.float64)).astype(np.int32).reshape(-1, 1, 2)
        if len(points) < 3:
            raise ContractError(f"polygon {polygon.name!r} needs at least 3 points, got {len(points)}")
        if polygon.fill_alpha > 0:
            overlay = image.copy()
            cv2.fillPoly(overlay, [points], polygon.color)
            cv2.addWeighted(overlay, polygon.fill_alpha, image, 1 - polygon.fill_alpha, 0, dst=image)
        cv2.polylines(image, [points], True, polygon.color, thickness, cv2.LINE_AA)
        if polygon.name:
            x, y = int(points[0, 0, 0]), int(points[0, 0, 1])
            _label(image, polygon.name, max(0, x), max(0, y), polygon.color, font_scale * 0.9)
    return image


def draw_motion(image: Image, boxes: Sequence[Sequence[int]]) -> Image:
    """Motion boxes (x1, y1, x2, y2) as thin outlines without labels."""
    _check(image)
    thickness, _ = _scale(image)
    for x1, y1, x2, y2 in boxes:
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), MOTION_COLOR, max(1, thickness // 2))
    return image


def detection_labels(
    class_names: Sequence[str], scores: npt.ArrayLike, tracker_ids: npt.ArrayLike | None = None
) -> list[str]:
    """'person 0.87' (or 'person #12 0.87' with track ids), one per box."""
    values = np.asarray(scores, np.float64).reshape(-1)
    ids = None if tracker_ids is None else np.asarray(tracker_ids).reshape(-1)
    if len(class_names) != len(values) or (ids is not None and len(ids) != len(values)):
        raise ContractError(
            f"detection_labels got {len(class_names)} names, {len(values)} scores"
            + ("" if ids is None else f" and {len(ids)} track ids")
        )
    if ids is None:
        return [f"{name} {score:.2f}" for name, score in zip(class_names, values, strict=True)]
    return [f"{name} #{int(t)} {score:.2f}" for name, t, score in zip(class_names, ids, values, strict=True)]


def annotate_alert(
    jpeg: bytes,
    alert: AlertRecord,
    zone: Polygon | None = None,
    quality: int = 85,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bytes:
    """An alert's frame with its zone, box and label (class, score, rule) drawn on it, as JPEG.
    Raises `ContractError` when the frame is not a decodable image within `max_pixels`."""
    image = decode_image(jpeg, max_pixels)
    if zone is not None:
        draw_polygons(image, [zone])
    label = f"{alert.class_name} {alert.confidence:.2f} {alert.rule}"
    draw_boxes(image, [alert.box], [label], [alert.class_id])
    return encode_jpeg(image, quality)
