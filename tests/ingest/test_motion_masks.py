"""Motion masks: changes inside them are not motion, so a moving corner stops keeping frames flowing;
on real footage, a mask over where people walk turns frames that were sent into skipped ones."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from ingest.camera import CameraWorker
from ingest.metrics import CameraCounters
from ingest.motion import MotionDetector, MotionGate
from ingest.publisher import DropOldestQueue, OutgoingFrame
from vigil.config import CameraConfig, MotionMaskConfig
from vigil.eval.groundtruth import load_mot

CORNER = MotionMaskConfig(name="clock", units="fraction", polygon=[(0.75, 0.0), (1.0, 0.0), (1.0, 0.25), (0.75, 0.25)])


def scene(tick: int, walker_x: int | None = None) -> np.ndarray:
    """640x480 grey scene; a 'clock' in the top-right corner whose hand changes every frame."""
    frame = np.full((480, 640, 3), 90, np.uint8)
    frame[20:100, 520 + (tick % 4) * 20 : 540 + (tick % 4) * 20] = 250
    if walker_x is not None:
        frame[250:400, walker_x : walker_x + 50] = 20
    return frame


def gated(detector: MotionDetector, frames: list[np.ndarray], keepalive_s: float = 10.0) -> list[bool]:
    gate = MotionGate(keepalive_s)
    return [gate.check(i * 200_000_000, detector.detect(f))[0] for i, f in enumerate(frames)]


def test_a_moving_corner_keeps_frames_flowing_until_it_is_masked() -> None:
    frames = [scene(t) for t in range(20)]
    assert gated(MotionDetector(), frames) == [True] * 20  # first: keep-alive; then the clock every frame
    assert gated(MotionDetector(masks=[CORNER]), frames) == [True] + [False] * 19


def test_motion_outside_the_mask_is_still_seen() -> None:
    detector = MotionDetector(masks=[CORNER])
    detector.detect(scene(0))
    boxes = detector.detect(scene(1, walker_x=200))
    assert len(boxes) == 1
    x1, y1, x2, y2 = boxes[0]
    assert abs(x1 - 200) <= 12 and abs(x2 - 250) <= 12 and abs(y1 - 250) <= 12 and abs(y2 - 400) <= 12


def test_pixel_masks_are_in_the_published_frames_pixels() -> None:
    # Published at max_width 320: the corner is x 240..320 of the published frame, 480..640 of the source.
    pixels = MotionMaskConfig(name="clock", polygon=[(240, 0), (320, 0), (320, 60), (240, 60)])
    frames = [scene(t) for t in range(10)]
    assert gated(MotionDetector(masks=[pixels], max_width=320), frames) == [True] + [False] * 9
    # Read as source pixels (no max_width) the same polygon misses the clock.
    assert gated(MotionDetector(masks=[pixels]), frames) == [True] * 10
    mask = MotionDetector(masks=[pixels], max_width=320).ignored((640, 480), (320, 240))
    assert mask is not None and mask.shape == (240, 320) and mask[10, 300] == 255 and mask[10, 200] == 0


def skipped_on(video: Path, masks: list[MotionMaskConfig], still_frames: str) -> tuple[int, int]:
    """(frames that go to detection, frames gating kept from it) of a replay of every frame of `video`: dropped
    ones with `still_frames: drop`, ones published marked still (no motion, not a keep-alive) with `publish`."""
    camera = CameraConfig.model_validate(
        {"id": "walk", "kind": "replay", "url": str(video), "replay": {"realtime": False},
         "motion": {"enabled": True, "keepalive_s": 10.0, "still_frames": still_frames,
                    "masks": [m.model_dump() for m in masks]}}
    )  # fmt: skip
    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(1000)
    counters = CameraCounters(camera.id)
    worker = CameraWorker.from_config(camera, queue, counters, threading.Event(), sample_fps=None)
    worker.run()
    published = [frame for frame in iter(lambda: queue.get(timeout=0), None)]
    still = sum(f.meta.motion == () and not f.meta.keepalive for f in published)
    return len(published) - still, counters.snapshot().motion_skipped + still


@pytest.mark.parametrize("still_frames", ["drop", "publish"])
def test_a_mask_over_where_people_walk_skips_frames_on_real_footage(shared_data: Path, still_frames: str) -> None:
    folder = shared_data / "footage" / "TUD-Campus"
    gt = load_mot(folder / "gt.txt")
    boxes = np.concatenate([gt.boxes(n).xyxy for n in gt.frame_numbers])
    # Every labelled person's box, from the highest head to the lowest feet, across the whole width.
    top, bottom = max(0.0, float(boxes[:, 1].min()) - 10), min(480.0, float(boxes[:, 3].max()) + 10)
    walk = MotionMaskConfig(name="walkway", polygon=[(0, top), (640, top), (640, bottom), (0, bottom)])
    sent, skipped = skipped_on(folder / "TUD-Campus.mp4", [], still_frames)
    # People walk through every frame (published, the first one only seeds the background: no motion yet).
    assert sent + skipped == 71 and skipped <= (1 if still_frames == "publish" else 0), (sent, skipped)
    sent_masked, skipped_masked = skipped_on(folder / "TUD-Campus.mp4", [walk], still_frames)
    assert sent_masked + skipped_masked == 71
    assert skipped_masked >= 60, (sent_masked, skipped_masked)  # only keep-alives and stray changes are sent
