"""Camera states: what ingest says about each camera, in the same words on /readyz and on the
status topic (its heartbeat), for a dead RTSP URL (reconnecting) and a replay (streaming)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kafka import TopicPartition

from ingest.metrics import OFFLINE_AFTER_S, CameraCounters
from vigil.config import VigilConfig
from vigil.health import camera_detail, camera_words, short_words
from vigil.kafka import make_consumer
from vigil.status import CameraState, StatusRecord

NS = 1_000_000_000


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------- pure logic


def test_counters_say_what_a_camera_is_doing() -> None:
    counters = CameraCounters("door")
    assert counters.camera_state().state == "starting"
    counters.set_state("streaming")
    for _ in range(10):
        counters.published(time.time_ns())
    streaming = counters.camera_state()
    assert streaming.state == "streaming" and streaming.fps > 0 and streaming.last_frame_ns is not None
    assert camera_words(streaming).startswith("streaming at ")

    down_at = time.time_ns()
    counters.down_since_ns, counters.attempt = down_at, 3
    counters.last_error = "could not open rtsp://viewer:hunter2@10.0.0.5/stream"
    counters.set_state("reconnecting")
    state = counters.camera_state(now_ns=down_at + 12 * NS)
    assert (state.state, state.since_ns, state.attempt, state.fps) == ("reconnecting", down_at, 3, 0.0)
    assert "hunter2" not in state.detail and "viewer:***@" in state.detail
    assert camera_words(state, down_at + 12 * NS) == "reconnecting for 12 s, try 3"
    detail = camera_detail(state, down_at + 12 * NS)
    assert short_words(detail) == "reconnecting for 12 s, try 3" and "last error: could not open" in detail

    later = down_at + int((OFFLINE_AFTER_S + 1) * NS)
    offline = counters.camera_state(now_ns=later)
    assert offline.state == "offline" and offline.since_ns == down_at, "offline since it went down"
    words = camera_words(offline, later)
    assert words.startswith("offline since ") and words.endswith(", try 3")

    counters.set_state("finished")
    assert camera_words(counters.camera_state()) == "ended"
    counters.last_error = None
    counters.set_state("stopped")
    stopped = counters.camera_state()
    assert stopped.state == "offline" and stopped.detail == "ingest stopped"


def test_camera_state_round_trips_through_the_status_contract() -> None:
    state = CameraState("door", "reconnecting", since_ns=5, attempt=2, detail="connection refused")
    record = StatusRecord("ingest@h:1", "ingest", "h", 1, 0, 10, 5.0, False, cameras=(state,))
    assert StatusRecord.from_bytes(record.to_bytes()).cameras == (state,)


# ---------------------------------------------------------------------------------------------- real broker


def readyz(port: int) -> dict[str, object]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            report: dict[str, object] = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        report = json.loads(exc.read())
    return report


def latest_cameras(config: VigilConfig, deadline_s: float, want: dict[str, str]) -> dict[str, CameraState]:
    """The newest camera states on the status topic once every camera in `want` has its state."""
    topic = config.topics.status.name
    consumer = make_consumer(config.kafka, "status-reader", None)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    cameras: dict[str, CameraState] = {}
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                for item in batch:
                    record = StatusRecord.from_bytes(item.value)
                    assert record.stage == "ingest" and item.key == record.process.encode()
                    cameras.update({c.camera_id: c for c in record.cameras})
            if all(cameras.get(c) is not None and cameras[c].state == s for c, s in want.items()):
                return cameras
    finally:
        consumer.close()
    return cameras


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_ingest_publishes_camera_states_on_the_status_topic(
    vigil_config: VigilConfig, tmp_path: Path, shared_data: Path
) -> None:
    data = vigil_config.model_dump(mode="json", exclude={"cameras"})
    port = closed_port()
    data["cameras"] = [
        {"id": "dead-cam", "url": "rtsp://viewer:${DEAD_PASSWORD}@127.0.0.1:" + f"{port}/stream1",
         "open_timeout_s": 1.0, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
        {"id": "replay-cam", "kind": "replay", "fps": 5,
         "url": str(shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4"),
         "replay": {"realtime": True, "loop": True}},
    ]  # fmt: skip
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(data))
    metrics_port = closed_port()
    env = os.environ | {"DEAD_PASSWORD": "Dead-Pass-31337", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "vigil", "--metrics-port", str(metrics_port), "ingest", "--config", str(config_file)]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        cameras = latest_cameras(vigil_config, 90, {"dead-cam": "reconnecting", "replay-cam": "streaming"})
        report = readyz(metrics_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output[-3000:]
    dead, replay = cameras.get("dead-cam"), cameras.get("replay-cam")
    assert dead is not None and dead.state == "reconnecting", (cameras, output[-2000:])
    assert dead.attempt >= 1 and dead.fps == 0.0 and dead.last_frame_ns is None
    assert "could not open rtsp://viewer:***@127.0.0.1" in dead.detail
    assert replay is not None and replay.state == "streaming" and replay.fps > 0 and replay.last_frame_ns
    # /readyz carries the same words as a reader of the status topic renders from the heartbeat.
    components = report["components"]
    assert isinstance(components, dict)
    assert short_words(components["camera:dead-cam"]["detail"]).startswith("reconnecting for ")
    assert components["camera:replay-cam"]["detail"].startswith("streaming at ")
    assert camera_words(dead).startswith("reconnecting for ") and camera_words(replay).startswith("streaming at ")
    assert "Dead-Pass-31337" not in output + json.dumps(report) + repr(cameras)
    assert "[tcp @" not in output and "cap.cpp" not in output, "library lines go through logging"
