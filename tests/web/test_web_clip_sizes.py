"""The clip writer's frame size: H.264 in yuv420p needs even sides, so an odd-sized camera's frames lose their
last row and column, pixel for pixel, and a frame of another size (a camera that changed resolution mid-clip) is
scaled to the clip's size."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import cv2
import numpy as np

from vigil.contracts import FrameMeta
from web.media import encode_clip

NS = 1_000_000_000


def _frames(shapes: list[tuple[int, int]]) -> Iterator[tuple[FrameMeta, bytes]]:
    rng = np.random.default_rng(3)
    for seq, (width, height) in enumerate(shapes):
        # Smooth content (a blurred field) so that H.264 at crf 27 keeps it close; the last column and row
        # are white, which the crop must drop rather than blend in.
        image = cv2.GaussianBlur(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), (0, 0), 6)
        image[:, -1] = 255
        image[-1, :] = 255
        ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        meta = FrameMeta("cam", seq, (seq + 1) * NS // 5, width, height, "replay")
        yield meta, jpeg.tobytes()


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="bgr24") for frame in container.decode(video=0)]


def test_odd_sides_are_cropped_and_another_size_is_scaled(tmp_path: Path) -> None:
    shapes = [(641, 481)] * 4 + [(321, 241)] * 2
    frames = list(_frames(shapes))
    stats = encode_clip(tmp_path / "clip.mp4", iter(frames), 4_000_000, 5.0)
    assert stats.frames == len(shapes)
    decoded = _decoded(tmp_path / "clip.mp4")
    assert [f.shape for f in decoded] == [(480, 640, 3)] * len(shapes)
    source = cv2.imdecode(np.frombuffer(frames[0][1], np.uint8), cv2.IMREAD_COLOR)
    error = np.abs(decoded[0].astype(int) - source[:480, :640].astype(int))
    assert error.mean() < 4, error.mean()  # the same pixels, not a resampling of them
    assert decoded[0][:, -1].mean() < 200 and decoded[0][-1, :].mean() < 200  # the white edge is gone
    assert decoded[-1][:, -3:].mean() > 200  # the small frame was scaled up, its white edge kept
