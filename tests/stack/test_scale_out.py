"""Scale-out is Kafka's consumer group: two `vigil detect` processes in one group share the frames
partitions, together process every frame exactly once when no rebalance happens mid-stream, and
both do part of the work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import yaml

from vigil.config import VigilConfig
from vigil.contracts import DetectionsRecord, FrameMeta
from vigil.kafka import ensure_topics, make_admin, make_consumer, make_producer
from vigil.scrape import scrape

pytestmark = pytest.mark.broker
FRAMES = 90
CAMERAS = [f"cam-{i}" for i in range(6)]  # keys that spread over the partitions


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_members(config: VigilConfig, count: int, timeout_s: float = 60) -> None:
    admin = make_admin(config.kafka)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            group = admin.describe_groups([config.detect.group_id])[config.detect.group_id]
            if len(group["members"]) == count and str(group["group_state"]).lower() == "stable":
                return
            time.sleep(0.5)
    finally:
        admin.close()
    pytest.fail(f"the group never had {count} stable members")


def test_two_workers_share_the_partitions_without_duplicates(
    vigil_config: VigilConfig, tmp_path: Path, shared_data: Path
) -> None:
    config = VigilConfig.model_validate(
        vigil_config.model_dump(mode="json")
        | {
            "topics": vigil_config.topics.model_dump(mode="json")
            | {"frames": {"name": vigil_config.topics.frames.name, "partitions": 4}},
            "detect": {
                "model": "yolox_nano",
                "batch_size": 4,
                "max_age_s": 3600,
                "allow_unknown_cameras": True,
                "group_id": vigil_config.detect.group_id,
            },
        }
    )
    ensure_topics(config.kafka, config.topics)
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    ports = [free_port(), free_port()]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "vigil", "--metrics-port", str(port), "detect", "--config", str(config_file)],
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"worker-{i}.log").open("w"),
        )
        for i, port in enumerate(ports)
    ]
    try:
        wait_for_members(config, 2)
        producer = make_producer(config.kafka, "test")
        capture = cv2.VideoCapture(str(shared_data / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"))
        started = time.monotonic()
        for index in range(FRAMES):
            ok, image = capture.read()
            assert ok
            camera = CAMERAS[index % len(CAMERAS)]
            meta = FrameMeta(camera, index // len(CAMERAS), time.time_ns(), image.shape[1], image.shape[0], "replay",
                             frame_index=index)  # fmt: skip
            jpeg = cv2.imencode(".jpg", image)[1].tobytes()
            producer.send(config.topics.frames.name, key=camera.encode(), value=jpeg, headers=meta.to_headers())
        producer.flush()
        producer.close()
        capture.release()

        consumer = make_consumer(config.kafka, "test", None, [config.topics.detections.name], consumer_timeout_ms=2000)
        records: list[DetectionsRecord] = []
        deadline = time.monotonic() + 120
        while len({r.frame_key for r in records}) < FRAMES and time.monotonic() < deadline:
            records.extend(DetectionsRecord.from_bytes(m.value) for m in consumer)
        consumer.close()
        elapsed = time.monotonic() - started
        keys = [r.frame_key for r in records]
        assert len(set(keys)) == FRAMES, f"{len(set(keys))} of {FRAMES} frames came out"
        assert len(keys) == len(set(keys)), "a frame was processed by both workers"
        done = [scrape(f"http://127.0.0.1:{port}").get("vigil_detect_detected_frames_total") for port in ports]
        assert all(d > 0 for d in done), f"one worker did nothing: {done}"
        assert sum(done) == FRAMES
        print(f"two workers: {FRAMES / elapsed:.1f} frames/s, split {done}")
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            assert worker.wait(timeout=30) == 0
