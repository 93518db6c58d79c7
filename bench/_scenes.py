"""The recordings bench_pipeline replays, made from the shared footage: the busy clips re-encoded to H.264 (the
codec cameras send), a scene idle 80 % of the time, and the latency scene of clips between empty stretches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CLIPS = ("TUD-Stadtmitte", "TUD-Campus")


def read_clip(clip: str) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(SHARED / "footage" / clip / (clip + ".mp4")))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    return frames


def write_h264(path: Path, frames: list[np.ndarray]) -> Path:
    """An H.264 recording of `frames` (PyAV's libx264, from the `web` extra), 25 fps: the codec cameras send; the
    shared footage itself is MPEG-4 Part 2."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def idle_scene(path: Path, idle_share: float = 0.8, noise: float = 3.0) -> Path:
    """The shared clips, each preceded by a static stretch of its own first frame with Gaussian sensor noise,
    so that `idle_share` of all frames are idle."""
    clips = [read_clip(clip) for clip in CLIPS]
    moving = sum(len(c) for c in clips)
    static_each = round(moving * idle_share / (1 - idle_share) / len(clips))
    rng = np.random.default_rng(0)
    frames: list[np.ndarray] = []
    for clip in clips:
        base = clip[0].astype(np.float32)
        frames += [
            np.clip(base + rng.normal(0, noise, base.shape), 0, 255).astype(np.uint8) for _ in range(static_each)
        ]
        frames += clip
    return write_h264(path, frames)


def latency_scene(path: Path, clip: str, lead_s: float = 8.0, gap_s: float = 3.0, repeats: int = 3) -> Path:
    """The clip `repeats` times, after `lead_s` and between `gap_s` of an empty grey scene (25 fps): the stack
    is warm and the group joined when people first appear, and every repeat starts its alerts afresh (the
    tracks are lost in the gap) in the steady state that the latency target is about."""
    frames = read_clip(clip)
    rng = np.random.default_rng(0)

    def grey(seconds: float) -> list[np.ndarray]:
        base = np.full(frames[0].shape, 118, np.float32)
        return [
            np.clip(base + rng.normal(0, 2.0, base.shape), 0, 255).astype(np.uint8) for _ in range(int(seconds * 25))
        ]

    scene = grey(lead_s)
    for _ in range(repeats):
        scene += frames + grey(gap_s)
    return write_h264(path, scene)
