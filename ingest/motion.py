"""Cheap motion detection to keep idle scenes away from the detector (Frigate-style).

The frame is shrunk to `downscale_width`, turned grey and blurred; a running-average background
is compared with it (absdiff + threshold + dilate) and the contours of what changed become
motion boxes, scaled back to the frame's pixels. It costs ~1 ms per frame at 320 px wide,
against tens of milliseconds for a detector.

Motion masks (`cameras[].motion.masks`) are polygons whose changes are not motion: they are
rasterised once per grey-frame size and cleared from the difference before it is thresholded, so
a clock or trees in the wind neither start motion boxes nor keep frames flowing. Pixel vertices
are pixels of the *published* frame (after `max_width`), as for zones; fraction vertices are
fractions of any frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from vigil.config import MotionMaskConfig
from vigil.imaging import resize_down

Box = tuple[int, int, int, int]


class MotionDetector:
    """`detect(frame) -> boxes` (x1, y1, x2, y2 in the frame's pixels); empty when nothing moved.

    The first frame only seeds the background. A change over `max_change_fraction` of the
    picture (lights switched on, camera auto-exposure, IR mode) is treated as a new scene: the
    background is reset to it and no motion is reported, rather than sending every frame.
    """

    def __init__(
        self,
        downscale_width: int = 320,
        threshold: int = 25,
        min_area_fraction: float = 0.002,
        alpha: float = 0.2,
        max_change_fraction: float = 0.8,
        masks: Sequence[MotionMaskConfig] = (),
        max_width: int | None = None,
    ) -> None:
        self.downscale_width = downscale_width
        self.threshold = threshold
        self.min_area_fraction = min_area_fraction
        self.alpha = alpha
        self.max_change_fraction = max_change_fraction
        self.masks = list(masks)
        self.max_width = max_width  # the published frame's width limit: pixel masks are in its pixels
        self._background: np.ndarray | None = None
        self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        # Frames that replaced an existing background as a new scene: they report no motion, yet the
        # picture changed (a still-frame consumer must not take them for unchanged).
        self.scene_changes = 0
        self._ignore: tuple[tuple[int, int, int, int], np.ndarray | None] | None = None

    def reset(self) -> None:
        self._background = None

    def ignored(self, frame_wh: tuple[int, int], grey_wh: tuple[int, int]) -> np.ndarray | None:
        """uint8 (grey height, grey width), 255 inside a motion mask; None without masks. Cached per size."""
        key = (*frame_wh, *grey_wh)
        if self._ignore is not None and self._ignore[0] == key:
            return self._ignore[1]
        mask: np.ndarray | None = None
        if self.masks:
            width, height = frame_wh
            # Published frame: the source scaled to max_width, as ingest's encoder does.
            published = min(1.0, self.max_width / width) if self.max_width else 1.0
            pub_wh = np.array([width * published, max(1, round(height * published))], np.float64)
            grey_size = np.array(grey_wh, np.float64)
            mask = np.zeros((grey_wh[1], grey_wh[0]), np.uint8)
            for area in self.masks:
                vertices = np.asarray(area.polygon, np.float64)
                fraction = vertices if area.units == "fraction" else vertices / pub_wh
                # 4 bits of sub-pixel precision: a small grey frame still follows the drawn edge.
                points = np.round(fraction * grey_size * 16).astype(np.int32).reshape(-1, 1, 2)
                cv2.fillPoly(mask, [points], 255, lineType=cv2.LINE_8, shift=4)
        self._ignore = (key, mask)
        return mask

    def _grey(self, frame: np.ndarray) -> tuple[np.ndarray, float]:
        if frame.ndim not in (2, 3):
            raise ValueError(f"frame must be HxW or HxWxC, got shape {frame.shape}")
        height, width = frame.shape[:2]
        scale = min(1.0, self.downscale_width / width)
        small = frame
        if scale < 1.0:
            small = resize_down(frame, self.downscale_width, max(1, round(height * scale)))
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        return cv2.GaussianBlur(grey, (5, 5), 0), scale

    def detect(self, frame: np.ndarray) -> list[Box]:
        grey, scale = self._grey(frame)
        if self._background is None or self._background.shape != grey.shape:
            self._background = grey.astype(np.float32)
            return []
        diff = cv2.absdiff(grey, cv2.convertScaleAbs(self._background))
        cv2.accumulateWeighted(grey, self._background, self.alpha)
        ignored = self.ignored((frame.shape[1], frame.shape[0]), (grey.shape[1], grey.shape[0]))
        if ignored is not None:
            diff[ignored > 0] = 0
        _, mask = cv2.threshold(diff, self.threshold, 255, cv2.THRESH_BINARY)
        changed = cv2.countNonZero(mask) / mask.size
        if changed > self.max_change_fraction:
            self._background = grey.astype(np.float32)
            self.scene_changes += 1
            return []
        mask = cv2.dilate(mask, self._kernel, iterations=2)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        min_area = self.min_area_fraction * mask.size
        height, width = frame.shape[:2]
        boxes: list[Box] = []
        for contour in contours:
            if cv2.contourArea(contour) < min_area:
                continue
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append(
                (
                    int(x / scale),
                    int(y / scale),
                    min(width, int(np.ceil((x + w) / scale))),
                    min(height, int(np.ceil((y + h) / scale))),
                )
            )
        return boxes


@dataclass
class MotionGate:
    """Decides whether a frame goes to detection: when it has motion, or when nothing was sent
    for `keepalive_s` (so downstream sees the camera alive and stationary objects get re-checked).
    `check(ts_ns, boxes) -> (send, keepalive)`."""

    keepalive_s: float
    _last_sent_ns: int | None = None

    def check(self, ts_ns: int, boxes: list[Box]) -> tuple[bool, bool]:
        if boxes:
            self._last_sent_ns = ts_ns
            return True, False
        if (
            self._last_sent_ns is None
            or ts_ns - self._last_sent_ns >= self.keepalive_s * 1e9
            or ts_ns < self._last_sent_ns  # clock went back (loop/reconnect): send, start over
        ):
            self._last_sent_ns = ts_ns
            return True, True
        return False, False
