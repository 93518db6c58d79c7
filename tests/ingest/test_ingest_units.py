"""Pure-logic tests of ingest: no broker, no RTSP server."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from ingest.camera import Backoff, CameraWorker, FrameEncoder, make_source
from ingest.metrics import CameraCounters
from ingest.motion import MotionDetector, MotionGate
from ingest.publisher import DropOldestQueue, OutgoingFrame, QueueClosed, frames_linger, live_producer_options
from ingest.sampler import FpsSampler
from ingest.sources import (
    CAPTURE_OPTIONS_ENV,
    CAPTURE_OPTIONS_GATE,
    CapturedFrame,
    ReplaySource,
    RtspSource,
    decoder_params,
    ffmpeg_capture_options,
    seqinfo_fps,
)
from vigil.config import CameraConfig, VigilConfig
from vigil.contracts import FrameMeta
from vigil.errors import SourceError

FOOTAGE = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "footage"
CAMPUS = FOOTAGE / "TUD-Campus" / "TUD-Campus.mp4"

# ------------------------------------------------------------------------------------------ sampler


@pytest.mark.parametrize("source_fps", [25.0, 30.0, 29.97, 12.0])
def test_sampler_takes_target_rate_from_jittered_timestamps(source_fps: float) -> None:
    rng = random.Random(7)
    sampler = FpsSampler(5.0)
    period = 1e9 / source_fps
    seconds = 60
    timestamps = [int(i * period + rng.uniform(-0.3, 0.3) * period) for i in range(int(seconds * source_fps))]
    timestamps.sort()
    taken = [ts for ts in timestamps if sampler.take(ts)]
    assert abs(len(taken) / seconds - 5.0) < 0.1, len(taken)
    gaps = np.diff(taken) / 1e9
    # No bursts: consecutive taken frames are at least ~one slot minus one source frame apart.
    assert gaps.min() > 0.2 - 1.7 / source_fps


def test_sampler_variable_source_rate_and_slow_source() -> None:
    sampler = FpsSampler(5.0)
    # 2 s at 50 fps, then 2 s at 2 fps (slower than target: every frame taken).
    fast = [int(i * 20e6) for i in range(100)]
    slow = [int(2e9 + i * 500e6) for i in range(1, 5)]
    taken_fast = sum(sampler.take(t) for t in fast)
    taken_slow = sum(sampler.take(t) for t in slow)
    assert taken_fast == 10
    assert taken_slow == 4


def test_sampler_restarts_when_time_goes_back_and_none_takes_all() -> None:
    sampler = FpsSampler(5.0)
    assert sampler.take(10_000_000_000)
    assert not sampler.take(10_100_000_000)
    assert sampler.take(0)  # loop / reconnect: new grid, no waiting 10 s
    assert not sampler.take(100_000_000)
    every = FpsSampler(None)
    assert all(every.take(t) for t in (0, 0, 1, 1))
    with pytest.raises(ValueError, match="fps must be positive"):
        FpsSampler(0)


# ------------------------------------------------------------------------------------------ queue


def _item(seq: int) -> OutgoingFrame:
    return OutgoingFrame(FrameMeta("cam", seq, 0, 1, 1, "rtsp"), b"x")


def test_drop_oldest_queue_counts_drops_and_keeps_newest() -> None:
    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(3)
    dropped = sum(queue.put(_item(i)) for i in range(10))
    assert dropped == 7 and queue.dropped == 7
    got = [queue.get(timeout=0).meta.seq for _ in range(3)]  # type: ignore[union-attr]
    assert got == [7, 8, 9]
    assert queue.get(timeout=0.01) is None
    queue.close()
    with pytest.raises(QueueClosed):
        queue.get(timeout=0.01)


def test_blocking_queue_is_lossless() -> None:
    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(2, block_when_full=True)
    received: list[int] = []

    def consume() -> None:
        while True:
            try:
                item = queue.get(timeout=5)
            except QueueClosed:
                return
            if item is not None:
                received.append(item.meta.seq)

    thread = threading.Thread(target=consume)
    thread.start()
    for i in range(200):
        assert queue.put(_item(i)) == 0
    queue.close()
    thread.join(5)
    assert received == list(range(200)) and queue.dropped == 0


# ------------------------------------------------------------------------------------------ backoff / reconnect


def test_backoff_grows_caps_and_jitters() -> None:
    backoff = Backoff(0.5, 8.0, jitter=0.2, rng=random.Random(1))
    delays = [backoff.next() for _ in range(10)]
    bases = [0.5, 1, 2, 4, 8, 8, 8, 8, 8, 8]
    for delay, base in zip(delays, bases, strict=True):
        assert 0.8 * base <= delay <= base
    assert len({round(d, 6) for d in delays[4:]}) > 1, "jitter must vary the capped delays"
    backoff.reset()
    assert backoff.next() <= 0.5


class FlakySource:
    """A live source whose opens fail `fail_opens` times, then streams `frames` frames and dies;
    after `sessions` sessions it asks the worker to stop."""

    kind = "rtsp"
    name = "rtsp://admin:***@cam/stream"

    def __init__(self, fail_opens: list[int], frames: int, stop: threading.Event) -> None:
        self.fail_opens = list(fail_opens)  # failures before each session
        self.frames = frames
        self.stop = stop
        self.opens = 0
        self.sent = 0
        self._failing = self.fail_opens.pop(0) if self.fail_opens else 0

    def open(self) -> None:
        self.opens += 1
        if self._failing:
            self._failing -= 1
            raise SourceError("could not open rtsp://admin:***@cam/stream: refused")
        self.sent = 0

    def read(self) -> CapturedFrame | None:
        if self.sent >= self.frames:
            if not self.fail_opens:
                self.stop.set()
            else:
                self._failing = self.fail_opens.pop(0)
            raise SourceError("no frame from rtsp://admin:***@cam/stream within 5.0s")
        self.sent += 1
        return CapturedFrame(np.zeros((48, 64, 3), np.uint8), 0, self.sent, 0)

    def close(self) -> None:
        pass


def _worker(source: FlakySource, stop: threading.Event, sleeps: list[float], clock: list[int]) -> CameraWorker:
    def fake_clock() -> int:
        clock[0] += 40_000_000  # 25 fps
        return clock[0]

    return CameraWorker(
        "cam",
        source,  # type: ignore[arg-type]
        DropOldestQueue(1000),
        CameraCounters("cam"),
        sampler=FpsSampler(None),
        encoder=FrameEncoder(None, 80),
        backoff=Backoff(0.5, 4.0, rng=random.Random(3)),
        stop_event=stop,
        sleep=sleeps.append,
        clock_ns=fake_clock,
    )


def test_reconnect_state_machine_backs_off_resets_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    stop = threading.Event()
    source = FlakySource(fail_opens=[6, 2], frames=3, stop=stop)
    sleeps: list[float] = []
    worker = _worker(source, stop, sleeps, [0])
    with caplog.at_level(logging.INFO, logger="ingest"):
        worker.run()
    # 6 failed opens -> 6 growing delays (capped at 4 s), then streaming; the loss after 3
    # frames costs one delay (backoff reset by the frames), then 2 failed opens.
    assert len(sleeps) == 6 + 1 + 2
    assert all(0.8 * b <= s <= b for s, b in zip(sleeps[:6], [0.5, 1, 2, 4, 4, 4], strict=True))
    assert all(0.8 * b <= s <= b for s, b in zip(sleeps[6:], [0.5, 1, 2], strict=True))
    stats = worker.counters.snapshot()
    assert stats.read == 6 and stats.reconnects == 9 and stats.state == "stopped"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert len(warnings) == 3, warnings  # cannot open / stream lost / stream lost at the end: once each
    assert sum("streaming again" in m for m in infos) == 2
    assert all("***" in m for m in warnings)


def test_replay_open_failure_is_final_not_retried(tmp_path: Path) -> None:
    stop = threading.Event()
    source = ReplaySource(str(tmp_path / "missing.mp4"))
    worker = CameraWorker(
        "cam", source, DropOldestQueue(4), CameraCounters("cam"),
        sampler=FpsSampler(None), encoder=FrameEncoder(), backoff=Backoff(0.1, 1), stop_event=stop,
    )  # fmt: skip
    worker.run()
    stats = worker.counters.snapshot()
    assert stats.state == "failed" and "does not exist" in (stats.last_error or "")


# ------------------------------------------------------------------------------------------ motion


def _scene(square_at: tuple[int, int] | None) -> np.ndarray:
    rng = np.random.default_rng(0)
    frame = rng.integers(90, 110, size=(480, 640, 3), dtype=np.uint8)  # static texture
    if square_at is not None:
        x, y = square_at
        frame[y : y + 60, x : x + 60] = 250
    return frame


def test_motion_static_scene_has_no_motion() -> None:
    detector = MotionDetector()
    for _ in range(10):
        assert detector.detect(_scene(None)) == []


def test_motion_moving_square_gives_box_near_it() -> None:
    detector = MotionDetector()
    detector.detect(_scene(None))
    boxes = detector.detect(_scene((400, 200)))
    assert len(boxes) == 1, boxes
    x1, y1, x2, y2 = boxes[0]
    # Source pixels (640 wide), not the 320-wide motion frame; dilation widens by a few px.
    assert abs(x1 - 400) <= 12 and abs(y1 - 200) <= 12 and abs(x2 - 460) <= 12 and abs(y2 - 260) <= 12


def test_motion_gate_keepalive() -> None:
    gate = MotionGate(keepalive_s=2.0)
    second = 1_000_000_000
    assert gate.check(0, []) == (True, True)  # first frame: keep-alive
    assert gate.check(1 * second, []) == (False, False)
    assert gate.check(int(1.5 * second), [(1, 2, 3, 4)]) == (True, False)
    assert gate.check(3 * second, []) == (False, False)
    assert gate.check(int(3.6 * second), []) == (True, True)


def test_worker_puts_motion_boxes_and_keepalive_in_headers() -> None:
    stop = threading.Event()
    frames = [_scene(None), _scene(None), _scene((100, 100)), _scene(None)]

    class Listed:
        kind, name = "replay", "listed"

        def __init__(self) -> None:
            self.i = 0

        def open(self) -> None: ...
        def close(self) -> None: ...

        def read(self) -> CapturedFrame | None:
            if self.i >= len(frames):
                return None
            self.i += 1
            return CapturedFrame(frames[self.i - 1], (self.i - 1) * 200_000_000, self.i - 1, 0)

    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(10)
    worker = CameraWorker(
        "cam", Listed(), queue, CameraCounters("cam"), sampler=FpsSampler(None),
        encoder=FrameEncoder(max_width=320), backoff=Backoff(0.1, 1),
        motion=MotionDetector(), motion_gate=MotionGate(10.0), stop_event=stop,
    )  # fmt: skip
    worker.run()
    out = [queue.get(timeout=0) for _ in range(len(queue))]
    metas = [o.meta for o in out if o is not None]
    # frame 0: keep-alive; frame 1: static, skipped; frame 2: motion; frame 3: the square left -> motion
    assert [m.frame_index for m in metas] == [0, 2, 3]
    assert metas[0].keepalive and metas[0].motion == ()
    assert metas[1].width == 320 and metas[1].height == 240
    x1, y1, x2, y2 = metas[1].motion[0]  # type: ignore[index]
    assert abs(x1 - 50) <= 6 and abs(y1 - 50) <= 6 and abs(x2 - 80) <= 6 and abs(y2 - 80) <= 6
    assert worker.counters.snapshot().motion_skipped == 1
    decoded = cv2.imdecode(np.frombuffer(out[1].jpeg, np.uint8), cv2.IMREAD_COLOR)  # type: ignore[union-attr]
    assert decoded.shape == (240, 320, 3)


# ------------------------------------------------------------------------------------------ sources


def test_ffmpeg_options_env_is_set_only_while_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CAPTURE_OPTIONS_ENV, "operator;value")
    with CAPTURE_OPTIONS_GATE.holding(ffmpeg_capture_options("udp")):
        import os

        assert os.environ[CAPTURE_OPTIONS_ENV] == "rtsp_transport;udp|fflags;nobuffer|flags;low_delay"
    import os

    assert os.environ[CAPTURE_OPTIONS_ENV] == "operator;value"


def test_rtsp_open_error_redacts_password(caplog: pytest.LogCaptureFixture) -> None:
    url = "rtsp://admin:hunter2secret@127.0.0.1:1/stream"  # port 1: refused at once
    source = RtspSource(url, open_timeout_s=1.0, read_timeout_s=1.0)
    with pytest.raises(SourceError) as info:
        source.open()
    assert "hunter2secret" not in str(info.value)
    assert "admin:***@127.0.0.1:1/stream" in str(info.value)
    stop = threading.Event()
    sleeps: list[float] = []

    def sleep(delay: float) -> None:
        sleeps.append(delay)
        if len(sleeps) >= 3:
            stop.set()

    worker = CameraWorker(
        "cam", source, DropOldestQueue(4), CameraCounters("cam"), sampler=FpsSampler(5),
        encoder=FrameEncoder(), backoff=Backoff(0.1, 1), stop_event=stop, sleep=sleep,
    )  # fmt: skip
    with caplog.at_level(logging.DEBUG, logger="ingest"):
        worker.run()
    assert caplog.records, "the failure must be logged"
    assert all("hunter2secret" not in r.getMessage() for r in caplog.records)
    assert "hunter2secret" not in (worker.counters.snapshot().last_error or "")
    assert "hunter2secret" not in worker.counters.snapshot().line()


def test_seqinfo_gives_true_fps_and_replay_numbers_frames(tmp_path: Path) -> None:
    assert seqinfo_fps(CAMPUS) == 25.0
    source = ReplaySource(str(CAMPUS), realtime=False, start_frame=10, end_frame=20)
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame)
    source.close()
    assert [f.frame_index for f in frames] == list(range(10, 20))
    assert frames[0].media_ns == 400_000_000 and source.total_frames == 10
    # An image folder (sorted by name) with the same numbering; fps from source_fps.
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i:06d}.jpg"), np.full((32, 48, 3), i * 50, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    folder = ReplaySource(str(tmp_path), source_fps=10.0, realtime=False, loop=True)
    folder.open()
    got = [folder.read() for _ in range(5)]
    assert [f.frame_index for f in got if f] == [0, 1, 2, 0, 1]
    assert [f.media_ns for f in got if f][:3] == [0, 100_000_000, 200_000_000]


def test_replay_converts_to_bgr_only_the_frames_the_sampler_takes() -> None:
    """Every frame is decoded (H.264 needs each one), but only a sampled frame is converted to BGR: at 5 fps from
    25 fps footage four frames in five cost their decode alone. The pixels are those `VideoCapture.read` gives."""
    source = ReplaySource(str(CAMPUS), realtime=False, end_frame=25)
    source.open()
    seen: list[CapturedFrame] = []

    class Seen:
        kind, name = "replay", source.name

        def open(self) -> None: ...
        def close(self) -> None: ...

        def read(self) -> CapturedFrame | None:
            frame = source.read()
            if frame is not None:
                assert not frame.converted
                seen.append(frame)
            return frame

    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(30)
    worker = CameraWorker(
        "cam", Seen(), queue, CameraCounters("cam"), sampler=FpsSampler(5.0),
        encoder=FrameEncoder(), backoff=Backoff(0.1, 1), stop_event=threading.Event(),
    )  # fmt: skip
    worker.run()
    source.close()
    published = [queue.get(timeout=0) for _ in range(len(queue))]
    assert [o.meta.frame_index for o in published if o is not None] == [0, 5, 10, 15, 20]
    assert [f.frame_index for f in seen if f.converted] == [0, 5, 10, 15, 20] and len(seen) == 25
    capture = cv2.VideoCapture(str(CAMPUS))
    reference = [capture.read()[1] for _ in range(11)]
    capture.release()
    assert np.array_equal(seen[10].image, reference[10])
    # The decoded picture is the capture's current one: converting a frame after the next read is refused.
    source.open()
    first, second = source.read(), source.read()
    assert first is not None and second is not None
    with pytest.raises(SourceError, match="after the next one was read"):
        _ = first.image
    assert np.array_equal(second.image, reference[1])
    source.close()


# ------------------------------------------------------------------------------------------ decoder threads


def test_replay_decodes_with_the_configured_threads_and_the_same_pixels() -> None:
    """One decoder thread by default (frame threading delays a live stream by a frame per extra thread);
    the thread count changes nothing in the pixels, and 0 leaves it to FFmpeg (one per core)."""
    assert decoder_params(0) == []
    decoded: dict[int, list[np.ndarray]] = {}
    for threads in (1, 3, 0):
        source = ReplaySource(str(CAMPUS), realtime=False, end_frame=12, decode_threads=threads)
        source.open()
        try:
            assert source.decoder_threads == threads if threads else source.decoder_threads >= 1
            decoded[threads] = [frame.image for frame in iter(source.read, None)]
        finally:
            source.close()
    assert len(decoded[1]) == 12
    for threads in (3, 0):
        assert all(np.array_equal(a, b) for a, b in zip(decoded[1], decoded[threads], strict=True))


def test_camera_config_decode_threads_reaches_the_source() -> None:
    camera = CameraConfig.model_validate({"id": "c", "kind": "replay", "url": str(CAMPUS)})
    assert camera.decode_threads == 1
    source = make_source(camera.model_copy(update={"decode_threads": 2}))
    assert isinstance(source, ReplaySource)
    source.open()
    try:
        assert source.decoder_threads == 2
    finally:
        source.close()


def test_frames_producers_linger_frames_linger_ms_and_a_live_delivery_still_covers_it() -> None:
    # Frames linger on their own setting (a request per 50 KB frame costs more CPU than its encode);
    # detections and alerts keep `linger_ms`. kafka-python refuses delivery <= linger + request.
    config = VigilConfig.model_validate(
        {"kafka": {"producer": {"linger_ms": 5, "frames_linger_ms": 40}}, "detect": {"max_age_s": 3}}
    )
    assert frames_linger(config) == {"linger_ms": 40}
    live = live_producer_options(config)
    assert live["linger_ms"] == 40
    assert live["delivery_timeout_ms"] == 2000  # the freshness budget's floor
    assert live["delivery_timeout_ms"] > live["linger_ms"] + live["request_timeout_ms"]
