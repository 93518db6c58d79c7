"""The detection function on the real Kafka broker (marker `broker`): frames of TUD-Campus in, one detections
record per frame out, poison records dead-lettered, and nothing lost when a worker is SIGKILLed mid-stream."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from detect import metrics
from detect.detector import Detector
from detect.worker import DetectWorker
from tests.detect.helpers import FOOTAGE, REPO, bomb_jpeg, read_frames
from vigil.config import VigilConfig
from vigil.contracts import DeadLetter, DetectionsRecord, FrameMeta
from vigil.kafka import ensure_topics, make_consumer, make_producer

pytestmark = pytest.mark.broker
CAMERA = "campus"


def _config(base: VigilConfig, model: str, batch_size: int = 4, **detect: object) -> VigilConfig:
    data = base.model_dump(mode="json")
    data["cameras"] = [{"id": CAMERA, "url": str(FOOTAGE), "kind": "replay"}]
    data["detect"].update({"model": model, "batch_size": batch_size, "max_wait_ms": 50, "intra_op_threads": 2})
    data["detect"].update(detect)
    data["metrics"]["enabled"] = False
    return VigilConfig.model_validate(data)


def _publish_frames(config: VigilConfig, count: int | None = None) -> int:
    producer = make_producer(config.kafka, "test-replay")
    frames = read_frames(count=count)
    for index, frame in enumerate(frames):
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
        assert ok
        meta = FrameMeta(CAMERA, index, time.time_ns(), frame.shape[1], frame.shape[0], "replay",
                         media_ns=index * 40_000_000, frame_index=index)  # fmt: skip
        producer.send(config.topics.frames.name, key=CAMERA.encode(), value=jpeg.tobytes(), headers=meta.to_headers())
    producer.flush()
    producer.close()
    return len(frames)


def _read_topic(
    config: VigilConfig, topic: str, until: int, timeout_s: float, frames: int | None = None
) -> list[object]:
    """Every record of `topic` from the beginning, polling until `until` records (or, with `frames`, until
    detections of frame_index 0..frames-1 are all there) or the timeout."""
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap(), enable_auto_commit=False, group_id=None)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        records: list[object] = []
        deadline = time.monotonic() + timeout_s
        indices: set[int | None] = set()
        while len(records) < until and time.monotonic() < deadline:
            for items in consumer.poll(timeout_ms=500).values():
                records.extend(items)
                if frames is not None:
                    indices.update(DetectionsRecord.from_bytes(r.value).frame_index for r in items)
            if frames is not None and indices >= set(range(frames)):
                break
        return records
    finally:
        consumer.close()


@pytest.fixture
def running_worker(vigil_config: VigilConfig) -> Iterator[tuple[VigilConfig, threading.Event, list[DetectWorker]]]:
    # A backlog on a loaded machine must not age past max_age_s: these tests count every frame.
    config = _config(vigil_config, "yolox_nano", max_frame_bytes=200_000, max_age_s=3600)
    ensure_topics(config.kafka, config.topics)
    stop = threading.Event()
    workers: list[DetectWorker] = []
    consumer = make_consumer(config.kafka, "detect", config.detect.group_id)
    producer = make_producer(config.kafka, "detect")
    worker = DetectWorker(config, Detector.from_config(config.detect), consumer, producer)
    worker.subscribe()
    workers.append(worker)
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield config, stop, workers
    finally:
        stop.set()
        thread.join(30)
        consumer.close(autocommit=False)
        producer.close()
        assert not thread.is_alive(), "worker did not stop within 30 s of the stop event"


def test_worker_detects_every_frame_in_order_and_dead_letters_poison(
    running_worker: tuple[VigilConfig, threading.Event, list[DetectWorker]],
) -> None:
    config, _stop, (worker,) = running_worker
    topic = config.topics.frames.name
    producer = make_producer(config.kafka, "test-poison")
    good = FrameMeta(CAMERA, 0, time.time_ns(), 640, 480, "replay")
    stranger = FrameMeta("nobody", 0, time.time_ns(), 640, 480, "replay")
    ok, small = cv2.imencode(".jpg", read_frames(count=1)[0])
    assert ok
    ok, quarter = cv2.imencode(".jpg", cv2.resize(read_frames(count=1)[0], (320, 240)))
    assert ok
    bomb = bomb_jpeg(30000, 30000)
    declared_bomb = FrameMeta(CAMERA, 0, time.time_ns(), 30000, 30000, "replay")
    huge_seq = [(k, b"9" * 400 if k == "seq" else v) for k, v in good.to_headers()]
    poison = [
        (good, b"GIF89a this is not a jpeg" * 20, "neither JPEG nor PNG"),
        (good, small.tobytes()[:700] + bytes(64), "(jpeg, 640x480) does not decode"),
        (None, small.tobytes(), "missing header"),
        (stranger, small.tobytes(), "camera 'nobody' is not in the config"),
        (good, b"\xff\xd8" + os.urandom(300_000), "over detect.max_frame_bytes"),
        # Decompression bombs: declared in the headers, or hidden behind honest-looking ones.
        (declared_bomb, bomb, "oversized_image: headers declare 30000x30000"),
        (good, bomb, "oversized_image: image declares 30000x30000 = 900.0 MP, over detect.max_pixels"),
        (good, quarter.tobytes(), "size_mismatch: image is 320x240 but its headers declare 640x480"),
        (huge_seq, small.tobytes(), "header 'seq' is 400 bytes, over the limit of 256"),
    ]
    counted = {kind: metrics.DEAD_LETTER.labels(kind)._value.get() for kind in ("oversized_image", "size_mismatch")}
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for meta, value, _reason in poison:  # poison first: the worker must carry on past it
        headers = meta if isinstance(meta, list) else meta.to_headers() if meta else []
        producer.send(topic, key=CAMERA.encode(), value=value, headers=headers)
    producer.flush()
    producer.close()
    total = _publish_frames(config)
    assert total == 71

    records = _read_topic(config, config.topics.detections.name, until=total, timeout_s=120)
    detections = [DetectionsRecord.from_bytes(r.value) for r in records]  # type: ignore[attr-defined]
    assert sorted(d.frame_index for d in detections if d.frame_index is not None) == list(range(total))
    assert len(detections) == total
    assert [d.seq for d in detections] == list(range(total))  # one partition per camera: in order
    assert all(r.key == CAMERA.encode() for r in records)  # type: ignore[attr-defined]
    people = [d.class_names.count("person") for d in detections]
    assert sum(people) / total >= 3  # TUD-Campus has several pedestrians in every frame
    first = detections[0]
    assert first.frame.topic == topic and first.model.name == "yolox_nano" and (first.width, first.height) == (640, 480)
    assert first.timings.infer_ms > 0 and first.timings.decode_ms > 0

    letters = [DeadLetter.from_record(r) for r in _read_topic(config, config.topics.dead_letter.name, len(poison), 60)]  # type: ignore[arg-type]
    assert len(letters) == len(poison)
    for letter, (_meta, value, reason) in zip(sorted(letters, key=lambda d: d.offset), poison, strict=True):
        assert reason in letter.reason and letter.stage == "detect" and letter.value == value
    assert worker.dead_letters.count == len(poison)
    assert metrics.DEAD_LETTER.labels("oversized_image")._value.get() == counted["oversized_image"] + 2
    assert metrics.DEAD_LETTER.labels("size_mismatch")._value.get() == counted["size_mismatch"] + 1
    # Each bomb decoded would have added 2.7 GB to this process's peak (5.3 GB measured before the fix).
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mb < 1000, f"peak RSS grew {grown_mb:.0f} MB while two bombs were triaged"


def test_consumer_lag_gauge_follows_the_backlog(
    running_worker: tuple[VigilConfig, threading.Event, list[DetectWorker]],
) -> None:
    config, _stop, _workers = running_worker
    seen: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(metrics.CONSUMER_LAG._value.get())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    total = _publish_frames(config)  # all at once: the worker works through a backlog, 4 frames a batch
    records = _read_topic(config, config.topics.detections.name, until=total, timeout_s=120)
    deadline = time.monotonic() + 30
    while metrics.CONSUMER_LAG._value.get() != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    done.set()
    sampler.join(5)
    assert len(records) == total
    # How deep the backlog gets depends on how fast this machine detects while the frames are still being
    # published (19 of 71 was seen); more than two batches behind is a backlog on any machine.
    backlog = 2 * config.detect.batch_size
    assert max(seen) > backlog, f"the lag gauge never showed the backlog of {total} frames (max {max(seen)})"
    assert metrics.CONSUMER_LAG._value.get() == 0  # caught up


def _write_config(config: VigilConfig, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True), sort_keys=False))
    return path


def _spawn(config_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "vigil", "detect", "--config", str(config_file)],
            cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip


def test_sigkilled_worker_loses_nothing_after_restart(vigil_config: VigilConfig, tmp_path: Path) -> None:
    # The slower model (~0.1 s/frame on 2 cores) leaves time to kill the worker mid-stream.
    config = _config(vigil_config, "yolov8n_int8", batch_size=4, max_age_s=3600)
    ensure_topics(config.kafka, config.topics)
    config_file = _write_config(config, tmp_path / "vigil.yaml")
    log = tmp_path / "worker.log"
    total = _publish_frames(config)
    first = _spawn(config_file, log)
    try:
        seen = _read_topic(config, config.topics.detections.name, until=12, timeout_s=90)
        assert len(seen) >= 12, log.read_text()[-3000:]
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        first.kill()
    done_before = len(_read_topic(config, config.topics.detections.name, until=total, timeout_s=2))
    assert done_before < total, "the worker finished before it could be killed; the test proves nothing"

    second = _spawn(config_file, log)
    try:
        records = _read_topic(config, config.topics.detections.name, until=10 * total, timeout_s=150, frames=total)
        keys = {DetectionsRecord.from_bytes(r.value).frame_key for r in records}  # type: ignore[attr-defined]
        indices = {DetectionsRecord.from_bytes(r.value).frame_index for r in records}  # type: ignore[attr-defined]
        assert indices == set(range(total)), f"missing frames {sorted(set(range(total)) - indices)}"
        assert len(keys) == total  # duplicates allowed, identified by the frame ref
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]
    finally:
        second.kill()
    assert "finishing the current batch" in log.read_text()


class _RecordingProducer:
    """The real producer, recording every send's future and counting flushes."""

    def __init__(self, producer: KafkaProducer) -> None:
        self.producer = producer
        self.futures: list[object] = []
        self.flushes = 0

    def send(self, *args: object, **kwargs: object) -> object:
        future = self.producer.send(*args, **kwargs)
        self.futures.append(future)
        return future

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1
        self.producer.flush(timeout=timeout)

    def __getattr__(self, name: str) -> object:
        return getattr(self.producer, name)


class _RecordingConsumer:
    """The real consumer; at each commit, records its offsets and whether every send made so far was acknowledged."""

    def __init__(self, consumer: KafkaConsumer, producer: _RecordingProducer) -> None:
        self.consumer = consumer
        self.producer = producer
        self.commits: list[tuple[dict[TopicPartition, int], bool]] = []

    def commit(self, offsets: dict[TopicPartition, object]) -> None:
        acknowledged = all(f.is_done and f.succeeded() for f in self.producer.futures)  # type: ignore[attr-defined]
        self.commits.append(({tp: o.offset for tp, o in offsets.items()}, acknowledged))  # type: ignore[attr-defined]
        self.consumer.commit(offsets)

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_commits_follow_acknowledgements_and_come_once_per_interval(vigil_config: VigilConfig) -> None:
    # The 71 frames are detected in many batches (4 frames each) and committed every 300 ms: in fewer.
    config = _config(vigil_config, "yolox_nano", max_frame_bytes=200_000, max_age_s=3600, commit_interval_ms=300)
    ensure_topics(config.kafka, config.topics)
    real_consumer = make_consumer(config.kafka, "detect", config.detect.group_id)
    producer = _RecordingProducer(make_producer(config.kafka, "detect"))
    consumer = _RecordingConsumer(real_consumer, producer)
    worker = DetectWorker(config, Detector.from_config(config.detect), consumer, producer)  # type: ignore[arg-type]
    worker.subscribe()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        total = _publish_frames(config)
        records = _read_topic(config, config.topics.detections.name, until=total, timeout_s=120)
        assert len(records) == total
    finally:
        stop.set()
        thread.join(30)
        real_consumer.close(autocommit=False)
        producer.producer.close()
    assert not thread.is_alive()
    assert consumer.commits, "the worker never committed"
    early = [offsets for offsets, acknowledged in consumer.commits if not acknowledged]
    assert not early, f"committed {early} before the detections sent so far were acknowledged"
    # Batches of 4 over 71 frames: at least 18 batches; the producer is flushed only before a commit.
    assert worker.batches >= 18 and worker.published == total
    assert producer.flushes < worker.batches, f"{producer.flushes} flushes for {worker.batches} batches"
    last: dict[TopicPartition, int] = {}
    for offsets, _acknowledged in consumer.commits:
        last.update(offsets)
    assert sum(last.values()) == total  # every frame committed, none twice past its offset
