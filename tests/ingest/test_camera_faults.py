"""A frame that OpenCV or the motion detector cannot process is a stream fault, not the end of
the camera's thread; `vigil replay --start-frame` only overrides the config when given.
Pure logic: no broker, no RTSP server (the CLI exit status is tested in test_replay.py)."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import numpy as np
import pytest

from ingest.camera import Backoff, CameraWorker, FrameEncoder
from ingest.cli import replay_camera
from ingest.metrics import CameraCounters
from ingest.motion import MotionDetector, MotionGate
from ingest.publisher import DropOldestQueue, OutgoingFrame
from ingest.sampler import FpsSampler
from ingest.sources import CapturedFrame
from vigil.cli import build_parser
from vigil.config import VigilConfig
from vigil.errors import ConfigError, SourceError

GOOD = np.zeros((48, 64, 3), np.uint8)
FIVE_CHANNELS = np.zeros((48, 64, 5), np.uint8)  # cv2.imencode: (-215) channels == 1 || 3 || 4
FOUR_DIMS = np.zeros((2, 48, 64, 3), np.uint8)  # MotionDetector: ValueError naming the shape


class ScriptedSource:
    """Each open() starts the next session; a session's frames are read in turn, then the
    stream is lost (SourceError). After the last session the worker is asked to stop."""

    name = "rtsp://admin:***@cam/stream"

    def __init__(self, sessions: list[list[np.ndarray]], stop: threading.Event, kind: str = "rtsp") -> None:
        self.kind = kind
        self.sessions = sessions
        self.stop = stop
        self.opens = 0
        self.closes = 0
        self._frames: list[np.ndarray] = []
        self._index = 0

    def open(self) -> None:
        self._frames = list(self.sessions[self.opens])
        self.opens += 1

    def read(self) -> CapturedFrame | None:
        if not self._frames:
            if self.opens >= len(self.sessions):
                self.stop.set()
            if self.kind == "replay":
                return None
            raise SourceError("no frame from rtsp://admin:***@cam/stream within 5.0s")
        self._index += 1
        return CapturedFrame(self._frames.pop(0), self._index * 40_000_000, self._index, 0)

    def close(self) -> None:
        self.closes += 1


def _worker(
    source: ScriptedSource,
    stop: threading.Event,
    sleeps: list[float],
    *,
    motion: bool = False,
    stop_after_sleeps: int | None = None,
) -> tuple[CameraWorker, DropOldestQueue[OutgoingFrame]]:
    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(1000)
    clock = [0]

    def sleep(delay: float) -> None:
        sleeps.append(delay)
        if stop_after_sleeps is not None and len(sleeps) >= stop_after_sleeps:
            stop.set()

    def fake_clock() -> int:
        clock[0] += 40_000_000
        return clock[0]

    worker = CameraWorker(
        "door-cam", source, queue, CameraCounters("door-cam"),  # type: ignore[arg-type]
        sampler=FpsSampler(None), encoder=FrameEncoder(None, 80), backoff=Backoff(0.5, 4.0, rng=random.Random(3)),
        motion=MotionDetector() if motion else None, motion_gate=MotionGate(0.01) if motion else None,
        stop_event=stop, sleep=sleep, clock_ns=fake_clock,
    )  # fmt: skip
    return worker, queue


def test_cv2_error_on_a_live_frame_reconnects_and_the_camera_keeps_streaming(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    source = ScriptedSource([[GOOD, GOOD, FIVE_CHANNELS, GOOD], [GOOD, GOOD, GOOD]], stop)
    sleeps: list[float] = []
    worker, queue = _worker(source, stop, sleeps)
    with caplog.at_level(logging.INFO, logger="ingest"):
        worker.run()  # before: cv2.error escaped run() and the camera's thread was gone for good
    stats = worker.counters.snapshot()
    # The bad frame ended the session (its last good frame was never read), the stream was reopened.
    assert source.opens == 2 and source.closes == 2
    assert stats.frame_errors == 1 and stats.reconnects == 1 and len(sleeps) == 1
    assert stats.published == 0 and len(queue) == 2 + 3, "frames before and after the fault are queued"
    assert stats.state == "stopped"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "camera door-cam: frame processing failed: frame 3 of shape (48, 64, 5)" in warnings[0], warnings
    assert "cv2.error: OpenCV" in warnings[0] and "channels == 1" in warnings[0] and "\n" not in warnings[0]
    assert any("door-cam: streaming again" in r.getMessage() for r in caplog.records)


def test_every_frame_failing_logs_once_and_backoff_keeps_growing(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    source = ScriptedSource([[FIVE_CHANNELS]] * 5, stop)
    sleeps: list[float] = []
    worker, _ = _worker(source, stop, sleeps, stop_after_sleeps=5)
    with caplog.at_level(logging.INFO, logger="ingest"):
        worker.run()
    stats = worker.counters.snapshot()
    assert stats.frame_errors == 5 and stats.reconnects == 5 and source.opens == 5 and stats.state == "stopped"
    # A stream that opens but never gets a frame through is not "up": no reset, 0.5, 1, 2, 4, 4 s.
    assert all(0.8 * b <= s <= b for s, b in zip(sleeps, [0.5, 1, 2, 4, 4], strict=True)), sleeps
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert not any("streaming" in r.getMessage() for r in caplog.records)
    assert "imencode" in (stats.last_error or "")


def test_motion_value_error_is_a_stream_fault(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    source = ScriptedSource([[GOOD, FOUR_DIMS], [GOOD]], stop)
    sleeps: list[float] = []
    worker, queue = _worker(source, stop, sleeps, motion=True)
    with caplog.at_level(logging.WARNING, logger="ingest"):
        worker.run()  # before: the motion detector's ValueError killed the thread
    stats = worker.counters.snapshot()
    assert stats.frame_errors == 1 and source.opens == 2 and len(sleeps) == 1 and len(queue) == 2
    first = caplog.records[0].getMessage()
    assert "door-cam: frame processing failed" in first
    assert "ValueError: frame must be HxW or HxWxC, got shape (2, 48, 64, 3)" in first


def test_bad_frame_in_a_recording_fails_the_camera_once_without_retry() -> None:
    stop = threading.Event()
    source = ScriptedSource([[GOOD, FIVE_CHANNELS, GOOD]], stop, kind="replay")
    sleeps: list[float] = []
    worker, queue = _worker(source, stop, sleeps)
    worker.run()
    stats = worker.counters.snapshot()
    # Reopening a recording would publish its first frames again: it fails, as an unreadable file does.
    assert stats.state == "failed" and stats.frame_errors == 1 and sleeps == [] and source.opens == 1
    assert "frame 2" in (stats.last_error or "") and len(queue) == 1


def test_unexpected_crash_marks_the_camera_failed_not_stopped() -> None:
    class Broken(ScriptedSource):
        def read(self) -> CapturedFrame | None:
            raise RuntimeError("bug in a source")

    stop = threading.Event()
    worker, _ = _worker(Broken([[GOOD]], stop), stop, [])
    with pytest.raises(RuntimeError, match="bug in a source"):
        worker.run()
    stats = worker.counters.snapshot()
    assert stats.state == "failed" and "crashed" in (stats.last_error or "")


# ------------------------------------------------------------------------------------------ replay flags


def _config_with_replay_camera(tmp_path: Path) -> VigilConfig:
    return VigilConfig.model_validate(
        {
            "cameras": [
                {"id": "door", "url": str(tmp_path / "door.mp4"), "kind": "replay", "jpeg_quality": 70,
                 "replay": {"start_frame": 25, "end_frame": 60, "realtime": False}},
            ]
        }
    )  # fmt: skip


def test_replay_keeps_configured_start_frame_unless_given(tmp_path: Path) -> None:
    config = _config_with_replay_camera(tmp_path)
    clip = str(tmp_path / "other.mp4")
    parser = build_parser()
    camera = replay_camera(config, parser.parse_args(["replay", clip, "--camera", "door"]))
    assert camera.replay.start_frame == 25 and camera.replay.end_frame == 60  # before: start_frame 0
    assert camera.url.get_secret_value() == clip and camera.jpeg_quality == 70
    given = replay_camera(config, parser.parse_args(["replay", clip, "--camera", "door", "--start-frame", "0"]))
    assert given.replay.start_frame == 0
    new = replay_camera(config, parser.parse_args(["replay", clip, "--camera", "new-cam"]))
    assert new.replay.start_frame == 0  # unknown camera: the default
    with pytest.raises(ConfigError, match="end_frame must be greater than start_frame"):
        replay_camera(config, parser.parse_args(["replay", clip, "--camera", "door", "--start-frame", "70"]))
