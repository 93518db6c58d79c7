"""Live RTSP ingest against a real GStreamer RTSP server and the real Kafka broker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest

from ingest.metrics import IngestMetrics
from ingest.runner import IngestRunner
from vigil.config import CameraConfig, VigilConfig
from vigil.kafka import ensure_topics, make_producer

if TYPE_CHECKING:  # fixtures' classes, for annotations only (tests/ is not a package)
    from tests.ingest.conftest import FramesReader, RtspServer

pytestmark = [pytest.mark.rtsp, pytest.mark.broker, pytest.mark.timeout(120)]


def camera(camera_id: str, url: str, **extra: object) -> CameraConfig:
    settings: dict[str, object] = {
        "id": camera_id,
        "url": url,
        "fps": 5.0,
        "open_timeout_s": 3.0,
        "read_timeout_s": 2.0,
        "reconnect_initial_s": 0.2,
        "reconnect_max_s": 1.0,
    }
    settings.update(extra)
    return CameraConfig.model_validate(settings)


@contextmanager
def running(
    config: VigilConfig, cameras: list[CameraConfig], registry: CollectorRegistry | None = None
) -> Iterator[IngestRunner]:
    ensure_topics(config.kafka, config.topics)
    producer = make_producer(config.kafka, "ingest-test")
    runner = IngestRunner(cameras, producer, config.topics.frames.name, IngestMetrics(registry or CollectorRegistry()))
    runner.start()
    try:
        yield runner
    finally:
        runner.stop(flush_timeout_s=10)
        producer.close(timeout=5)


def wait_until(predicate: Callable[[], bool], timeout_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until predicate() held, or None on timeout."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(step_s)
    return None


def test_rtsp_frames_reach_kafka_with_headers(
    vigil_config: VigilConfig,
    rtsp_server: Callable[..., RtspServer],
    frames_reader: Callable[[VigilConfig], FramesReader],
) -> None:
    server = rtsp_server()
    registry = CollectorRegistry()
    with running(vigil_config, [camera("door", server.url())], registry) as runner:
        reader = frames_reader(vigil_config)
        assert reader.wait_for(lambda r: len(r) >= 12, 30.0), runner.stats()
    metas = [m for m, _, _ in reader.records]
    assert all(key == b"door" for _, key, _ in reader.records)
    assert [m.seq for m in metas] == list(range(len(metas)))  # in order, nothing lost
    assert {(m.camera_id, m.source, m.width, m.height, m.encoding) for m in metas} == {
        ("door", "rtsp", 320, 240, "jpeg")
    }
    assert all(m.frame_index is None and m.media_ns is not None for m in metas)
    capture = np.array([m.capture_ns for m in metas]) / 1e9
    assert np.all(np.diff(capture) > 0.12), "5 fps sampling: frames ~0.2 s apart"  # source is 15 fps
    # The rate by capture time: a reader that joins late gets a backlog in one poll, so arrival times say nothing.
    rate = (len(capture) - 1) / (capture[-1] - capture[0])
    assert rate < 7.5, f"sampled rate {rate:.1f} fps, expected ~5"
    image = cv2.imdecode(np.frombuffer(reader.records[-1][2], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (240, 320, 3)
    text = generate_latest(registry).decode()
    assert 'vigil_ingest_frames_published_total{camera="door"}' in text
    assert "rtsp://" not in text


def test_rtsp_server_restart_frames_flow_again(
    vigil_config: VigilConfig, rtsp_server: Callable[..., RtspServer]
) -> None:
    server = rtsp_server()
    with running(vigil_config, [camera("gate", server.url())]) as runner:
        counters = runner.workers[0].counters
        assert wait_until(lambda: counters.get("published") >= 3, 20.0) is not None, counters.snapshot()
        server.stop()
        assert wait_until(lambda: counters.state == "reconnecting", 5.0) is not None, counters.snapshot()
        time.sleep(2.0)  # several failed reopens while it is down
        down_reconnects = counters.get("reconnects")
        assert down_reconnects >= 2
        published = counters.get("published")
        server.start()
        back = wait_until(lambda: counters.get("published") > published, 15.0)
        assert back is not None and back < 8.0, f"frames resumed after {back}s: {counters.snapshot()}"
        print(f"server restart: frames published again {back:.2f}s after it came back")
        assert counters.state == "streaming"


def test_rtsp_frozen_server_is_detected_and_reopened(
    vigil_config: VigilConfig, rtsp_server: Callable[..., RtspServer]
) -> None:
    server = rtsp_server()
    with running(vigil_config, [camera("yard", server.url(), read_timeout_s=2.0)]) as runner:
        counters = runner.workers[0].counters
        assert wait_until(lambda: counters.get("read") >= 10, 20.0) is not None, counters.snapshot()
        server.freeze()
        try:
            detected = wait_until(lambda: counters.state == "reconnecting", 10.0)
            read_at_freeze = counters.get("read")
        finally:
            server.thaw()
        # The read timeout is 2 s: detection within it plus one frame interval and scheduling slack.
        assert detected is not None and detected < 2.0 + 2.0, f"freeze detected after {detected}s"
        print(f"freeze (SIGSTOP) detected after {detected:.2f}s with read_timeout_s=2")
        assert "froze" in (counters.last_error or "") or "no frame" in (counters.last_error or "")
        assert wait_until(lambda: counters.get("read") > read_at_freeze + 5, 15.0) is not None, counters.snapshot()
        assert counters.state == "streaming"


def test_bad_url_and_wrong_password_fail_alone(
    vigil_config: VigilConfig, rtsp_server: Callable[..., RtspServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = rtsp_server(user="viewer", password="right-pass-123")
    cameras = [
        camera("good", server.url()),
        camera("badpass", server.url(password="wrong-pass-456")),
        camera("badpath", server.url().replace("/test", "/nothing")),
    ]
    with caplog.at_level(logging.DEBUG, logger="ingest"), running(vigil_config, cameras) as runner:
        good, badpass, badpath = (w.counters for w in runner.workers)
        assert wait_until(lambda: good.get("published") >= 10, 25.0) is not None, good.snapshot()
        assert badpass.state == badpath.state == "reconnecting"
        assert badpass.get("published") == badpath.get("published") == 0
        assert badpass.get("reconnects") >= 3, "keeps retrying with backoff"
    for stats in (badpass.snapshot(), badpath.snapshot()):
        assert stats.last_error and "could not open rtsp://viewer:***@127.0.0.1" in stats.last_error
        assert "user name and password" in stats.last_error
    messages = [r.getMessage() for r in caplog.records]
    assert not any("right-pass-123" in m or "wrong-pass-456" in m for m in messages)
    warnings = [m for r, m in zip(caplog.records, messages, strict=True) if r.levelno >= logging.WARNING]
    assert sum("camera badpass" in m for m in warnings) == 1, "a failing camera's state change is logged once"


def test_h265_stream(vigil_config: VigilConfig, rtsp_server: Callable[..., RtspServer]) -> None:
    server = rtsp_server(codec="h265")
    with running(vigil_config, [camera("hevc", server.url())]) as runner:
        counters = runner.workers[0].counters
        assert wait_until(lambda: counters.get("published") >= 5, 25.0) is not None, counters.snapshot()


def test_vigil_ingest_cli_publishes_and_stops_gracefully(
    vigil_config: VigilConfig,
    rtsp_server: Callable[..., RtspServer],
    frames_reader: Callable[[VigilConfig], FramesReader],
    tmp_path: Path,
) -> None:
    server = rtsp_server(user="cli", password="cli-secret-789")
    data = vigil_config.model_dump(mode="json", exclude={"cameras"})
    data["cameras"] = [
        {"id": "cli-cam", "url": "rtsp://cli:${CAM_PASSWORD}@127.0.0.1:" + f"{server.port}/test", "fps": 5,
         "motion": {"enabled": True, "keepalive_s": 1.0}},
        {"id": "off-cam", "url": "rtsp://127.0.0.1:1/none", "enabled": False},
    ]  # fmt: skip
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(data))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "CAM_PASSWORD": "cli-secret-789"}
    command = [sys.executable, "-m", "vigil", "ingest", "--config", str(config_file)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        reader = frames_reader(vigil_config)
        assert reader.wait_for(lambda r: len(r) >= 5, 30.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output[-2000:]
    assert "final: cli-cam: stopped" in output and "cli-secret-789" not in output
    assert {m.camera_id for m, _, _ in reader.records} == {"cli-cam"}
    # The ball pattern moves: frames carry motion boxes, or are keep-alives at least every 1 s.
    assert all(m.motion is not None for m, _, _ in reader.records)
    assert any(m.motion for m, _, _ in reader.records)
