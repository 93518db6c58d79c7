"""vigil's Kafka helpers against the real broker: frames with FrameMeta headers, topic creation,
dead letters, and the error when no broker answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from vigil.config import KafkaConfig, VigilConfig
from vigil.contracts import DeadLetter, FrameMeta
from vigil.errors import ContractError, KafkaUnavailableError
from vigil.kafka import DeadLetterPublisher, ensure_topics, make_admin, make_consumer, make_producer

FRAMES = 12


@pytest.fixture(scope="module")
def jpegs(shared_data: Path) -> list[bytes]:
    """The first frames of real footage, JPEG-encoded as ingest does."""
    capture = cv2.VideoCapture(str(shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4"))
    encoded: list[bytes] = []
    try:
        while len(encoded) < FRAMES:
            ok, frame = capture.read()
            assert ok, f"TUD-Campus.mp4 ended after {len(encoded)} frames"
            ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
            assert ok
            encoded.append(buffer.tobytes())
    finally:
        capture.release()
    return encoded


def consume(config: KafkaConfig, group: str, topic: str, count: int, timeout_s: float = 30.0) -> list[Any]:
    consumer = make_consumer(config, "test", group, [topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        consumer.commit()
    finally:
        consumer.close()
    return records


def partitions_of(config: KafkaConfig, names: Iterable[str]) -> dict[str, int]:
    admin = make_admin(config)
    try:
        return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(list(names))}
    finally:
        admin.close()


@pytest.mark.broker
def test_ensure_topics_creates_configured_partitions_once(vigil_config: VigilConfig) -> None:
    topics = vigil_config.topics
    created = ensure_topics(vigil_config.kafka, topics)
    assert sorted(created) == sorted(t.name for t in topics.all())
    assert partitions_of(vigil_config.kafka, created) == {t.name: t.partitions for t in topics.all()}
    assert ensure_topics(vigil_config.kafka, topics) == []  # idempotent


@pytest.mark.broker
def test_frames_round_trip(vigil_config: VigilConfig, jpegs: list[bytes]) -> None:
    kafka, topic = vigil_config.kafka, vigil_config.topics.frames.name
    ensure_topics(kafka, vigil_config.topics)
    sent: dict[tuple[str, int], tuple[bytes, FrameMeta]] = {}
    producer = make_producer(kafka, "test")
    for index, jpeg in enumerate(jpegs):
        camera = ("cam-a", "cam-b")[index % 2]
        meta = FrameMeta(
            camera_id=camera, seq=index // 2, capture_ns=time.time_ns(), width=640, height=480,
            source="replay", media_ns=index * 40_000_000, frame_index=index,
            motion=((10, 20, 110, 220),) if index % 3 == 0 else None,
        )  # fmt: skip
        producer.send(topic, key=camera.encode(), value=jpeg, headers=meta.to_headers())
        sent[(camera, meta.seq)] = (jpeg, meta)
    producer.flush(timeout=30)
    producer.close()

    records = consume(kafka, vigil_config.detect.group_id, topic, len(jpegs))
    assert len(records) == len(jpegs)
    partition_of: dict[str, set[int]] = {}
    for record in records:
        meta = FrameMeta.from_headers(record.headers)
        assert record.key == meta.camera_id.encode()
        jpeg, sent_meta = sent[(meta.camera_id, meta.seq)]
        assert meta == sent_meta
        assert record.value == jpeg
        partition_of.setdefault(meta.camera_id, set()).add(record.partition)
    # Keyed by camera: each camera's frames share a partition, so their order is kept.
    assert all(len(p) == 1 for p in partition_of.values())
    for camera in ("cam-a", "cam-b"):
        seqs = [FrameMeta.from_headers(r.headers).seq for r in records if r.key == camera.encode()]
        assert seqs == sorted(seqs) == list(range(len(jpegs) // 2))
    image = cv2.imdecode(np.frombuffer(records[0].value, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)

    # The group committed what it read: a restart of the group receives nothing again.
    assert consume(kafka, vigil_config.detect.group_id, topic, 1, timeout_s=3.0) == []


@pytest.mark.broker
def test_dead_letter_round_trip(vigil_config: VigilConfig, jpegs: list[bytes]) -> None:
    kafka, topics = vigil_config.kafka, vigil_config.topics
    ensure_topics(kafka, topics)
    producer = make_producer(kafka, "test")
    good = FrameMeta(camera_id="cam-x", seq=0, capture_ns=1, width=640, height=480, source="rtsp").to_headers()
    broken_headers = [(k, b"not-a-number" if k == "seq" else v) for k, v in good]
    producer.send(topics.frames.name, key=b"cam-x", value=jpegs[0], headers=broken_headers).get(timeout=30)

    (record,) = consume(kafka, vigil_config.detect.group_id, topics.frames.name, 1)
    with pytest.raises(ContractError) as info:
        FrameMeta.from_headers(record.headers)
    dead_letters = DeadLetterPublisher(producer, topics.dead_letter.name, stage="detect")
    dead_letters.publish(record, str(info.value)).get(timeout=30)
    assert dead_letters.count == 1
    producer.close()

    (dlq_record,) = consume(kafka, f"{vigil_config.detect.group_id}-dlq", topics.dead_letter.name, 1)
    letter = DeadLetter.from_record(dlq_record)
    assert (letter.topic, letter.partition, letter.offset) == (record.topic, record.partition, record.offset)
    assert letter.stage == "detect"
    assert "'seq' must be an integer" in letter.reason and letter.reason == str(info.value)
    assert letter.key == b"cam-x" and letter.value == jpegs[0]
    assert list(letter.headers) == broken_headers
    assert letter.time_ns > 0


def test_dead_port_raises_kafka_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    external = KafkaConfig(bootstrap_servers=[f"127.0.0.1:{port}"], bootstrap_timeout_ms=1000)
    with pytest.raises(KafkaUnavailableError, match=rf"127\.0\.0\.1:{port}.*check kafka\.bootstrap_servers"):
        make_producer(external, "test")
    embedded = KafkaConfig.model_validate({"bootstrap_timeout_ms": 1000, "embedded": {"port": port}})
    with pytest.raises(KafkaUnavailableError, match=r"vigil broker start"):
        make_producer(embedded, "test")
