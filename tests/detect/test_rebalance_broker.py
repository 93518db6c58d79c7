"""Rebalances lose no frame (marker `broker`): while frames trickle in, a second detection worker joins the
group and later leaves. kafka-python runs the eager protocol — every member gives up all its partitions and
keeps the fetch position of those it gets back — so a worker that dropped records it had already fetched
must fetch them again itself. Every offset of the frames topic must end up with a detections record."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from detect.detector import Detector
from detect.worker import DetectWorker
from tests.detect.helpers import read_frames
from vigil.config import VigilConfig
from vigil.contracts import DetectionsRecord, FrameMeta
from vigil.errors import VigilError
from vigil.kafka import ensure_topics, make_admin, make_consumer, make_producer

pytestmark = pytest.mark.broker
CAMERAS = [f"cam-{i}" for i in range(6)]  # keys that spread over the four partitions
FRAMES = 240
FPS = 30.0


@dataclass
class RunningWorker:
    """One in-process `DetectWorker` with its own consumer and producer, run on a thread."""

    worker: DetectWorker
    consumer: KafkaConsumer
    producer: KafkaProducer
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None
    closed: bool = False

    def start(self) -> None:
        def target() -> None:
            try:
                self.worker.run(self.stop)
            except (VigilError, KafkaError) as exc:  # what the worker raises; the test asserts there was none
                self.errors.append(exc)

        self.worker.subscribe()
        self.thread = threading.Thread(target=target, name="test-detect-worker", daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.stop.set()
        if self.thread is not None:
            self.thread.join(30)
            if self.thread.is_alive():
                self.errors.append(TimeoutError("worker did not stop within 30 s of its stop event"))
        self.consumer.close(autocommit=False)  # leaves the group: the other member gets every partition
        self.producer.close()


def _config(base: VigilConfig) -> VigilConfig:
    data = base.model_dump(mode="json")
    data["topics"]["frames"]["partitions"] = 4
    # A large batch with a long wait keeps records of several partitions gathered across polls while frames
    # trickle in, so the rebalance lands while the worker holds fetched, unprocessed records.
    data["detect"].update({"model": "yolox_nano", "batch_size": 16, "max_wait_ms": 1500, "max_age_s": 3600,
                           "allow_unknown_cameras": True, "intra_op_threads": 1})  # fmt: skip
    # Fast heartbeats: the member that keeps running notices each rebalance within half a second.
    data["kafka"]["consumer"] = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 500}
    data["metrics"]["enabled"] = False
    return VigilConfig.model_validate(data)


def _members(config: VigilConfig) -> tuple[int, str]:
    admin = make_admin(config.kafka)
    try:
        group = admin.describe_groups([config.detect.group_id])[config.detect.group_id]
        return len(group["members"]), str(group["group_state"]).lower()
    finally:
        admin.close()


def _wait_for_members(config: VigilConfig, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if _members(config) == (count, "stable"):
            return
        time.sleep(0.25)
    pytest.fail(f"the group never had {count} stable member(s): {_members(config)}")


@pytest.fixture
def rebalance_setup(vigil_config: VigilConfig) -> Iterator[tuple[VigilConfig, Detector, list[RunningWorker]]]:
    config = _config(vigil_config)
    ensure_topics(config.kafka, config.topics)
    detector = Detector.from_config(config.detect)  # shared: ONNX Runtime sessions are thread-safe
    workers: list[RunningWorker] = []
    try:
        yield config, detector, workers
    finally:
        for running in workers:
            running.close()


def _worker(config: VigilConfig, detector: Detector, workers: list[RunningWorker]) -> RunningWorker:
    consumer = make_consumer(config.kafka, "detect", config.detect.group_id)
    producer = make_producer(config.kafka, "detect")
    running = RunningWorker(DetectWorker(config, detector, consumer, producer), consumer, producer)
    workers.append(running)
    running.start()
    return running


def _all_frame_offsets(config: VigilConfig) -> set[tuple[int, int]]:
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap(), enable_auto_commit=False, group_id=None)
    try:
        topic = config.topics.frames.name
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        begin, end = consumer.beginning_offsets(partitions), consumer.end_offsets(partitions)
        return {(tp.partition, offset) for tp in partitions for offset in range(begin[tp], end[tp])}
    finally:
        consumer.close()


def _detected_frames(config: VigilConfig, wanted: set[tuple[int, int]], timeout_s: float) -> list[DetectionsRecord]:
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap(), enable_auto_commit=False, group_id=None)
    try:
        topic = config.topics.detections.name
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[DetectionsRecord] = []
        seen: set[tuple[int, int]] = set()
        deadline = time.monotonic() + timeout_s
        while not wanted <= seen and time.monotonic() < deadline:
            for items in consumer.poll(timeout_ms=500).values():
                for item in items:
                    record = DetectionsRecord.from_bytes(item.value)
                    records.append(record)
                    seen.add((record.frame.partition, record.frame.offset))
        return records
    finally:
        consumer.close()


def test_no_frame_is_lost_when_a_worker_joins_and_leaves_mid_stream(
    rebalance_setup: tuple[VigilConfig, Detector, list[RunningWorker]],
) -> None:
    config, detector, workers = rebalance_setup
    jpegs = [cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes() for frame in read_frames()]
    first = _worker(config, detector, workers)
    _wait_for_members(config, 1)

    producer = make_producer(config.kafka, "test-frames")
    second: RunningWorker | None = None
    joined_at = left_at = -1
    try:
        for index in range(FRAMES):
            camera = CAMERAS[index % len(CAMERAS)]
            meta = FrameMeta(camera, index // len(CAMERAS), time.time_ns(), 640, 480, "replay", frame_index=index)
            producer.send(config.topics.frames.name, key=camera.encode(), value=jpegs[index % len(jpegs)],
                          headers=meta.to_headers())  # fmt: skip
            producer.flush()
            time.sleep(1 / FPS)
            if index == 40:
                second = _worker(config, detector, workers)  # join: both members give up everything, then split
            elif second is not None and joined_at < 0 and _members(config) == (2, "stable"):
                joined_at = index
            elif joined_at >= 0 and left_at < 0 and index >= joined_at + 50:
                second.close()  # leave: the first worker gets every partition back, keeping its own
                left_at = index
    finally:
        producer.close()
    assert joined_at >= 0 and left_at >= 0, f"the rebalances did not happen mid-stream ({joined_at=}, {left_at=})"

    wanted = _all_frame_offsets(config)
    assert len(wanted) == FRAMES
    records = _detected_frames(config, wanted, timeout_s=90)
    seen = {(r.frame.partition, r.frame.offset) for r in records}
    missing = sorted(wanted - seen)
    assert not missing, f"{len(missing)} frame(s) got no detections record: {missing[:20]}"
    assert second is not None and second.worker.published > 0, "the second worker did no work; nothing was tested"
    assert {r.frame_index for r in records} == set(range(FRAMES))
    for running in workers:
        running.close()
    assert not [e for running in workers for e in running.errors], "a worker failed"
    print(f"refetched partitions: first {first.worker.refetched}, second {second.worker.refetched}; "
          f"{len(records) - len(seen)} duplicate(s)")  # fmt: skip
