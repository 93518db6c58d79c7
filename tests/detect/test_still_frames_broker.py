"""Still frames on the real broker (marker `broker`): a worker publishes the last detections of the camera for
frames ingest marked as still, names the frame they come from, and runs the model whenever the chain back to
a detected frame is broken (motion, a keep-alive, a missing seq, a frame that did not decode)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import numpy as np
import pytest

from detect.detector import Detector
from detect.worker import DetectWorker
from tests.detect.helpers import FOOTAGE, read_frames
from vigil.config import VigilConfig
from vigil.contracts import DeadLetter, DetectionsRecord, FrameMeta
from vigil.kafka import ensure_topics, make_consumer, make_producer

pytestmark = pytest.mark.broker
CAMERA = "campus"


def _read(config: VigilConfig, topic: str, count: int, timeout_s: float) -> list[object]:
    consumer = make_consumer(config.kafka, "test-read", None, [topic], consumer_timeout_ms=1000)
    records: list[object] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < count and time.monotonic() < deadline:
            for items in consumer.poll(timeout_ms=500).values():
                records.extend(items)
    finally:
        consumer.close()
    return records


@contextmanager
def _running_worker(config: VigilConfig, detector: Detector) -> Iterator[DetectWorker]:
    """A detect worker on its own thread for the body of the `with`; stopped and checked stopped after it."""
    stop = threading.Event()
    consumer = make_consumer(config.kafka, "detect", config.detect.group_id)
    producer = make_producer(config.kafka, "detect")
    worker = DetectWorker(config, detector, consumer, producer)
    worker.subscribe()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(30)
        consumer.close(autocommit=False)
        producer.close()
    assert not thread.is_alive()


def test_worker_reuses_detections_for_still_frames_only_along_an_unbroken_chain(vigil_config: VigilConfig) -> None:
    data = vigil_config.model_dump(mode="json")
    data["cameras"] = [{"id": CAMERA, "url": str(FOOTAGE), "kind": "replay"}]
    data["detect"].update({"model": "yolox_nano", "batch_size": 4, "max_age_s": 3600, "intra_op_threads": 2})
    data["metrics"]["enabled"] = False
    config = VigilConfig.model_validate(data)
    ensure_topics(config.kafka, config.topics)
    images = read_frames(count=14)
    still, moved = (), ((100, 100, 200, 300),)
    # index: (seq, motion, keepalive); seq 11 never comes (dropped by ingest's queue, say)
    plan = {0: (0, still, False), 1: (1, still, False), 2: (2, still, False), 3: (3, still, False),
            4: (4, still, False), 5: (5, still, False), 6: (6, still, False), 7: (7, moved, False),
            8: (8, still, False), 9: (9, still, True), 10: (10, still, False), 12: (12, still, False),
            13: (13, still, False)}  # fmt: skip
    producer = make_producer(config.kafka, "test-still")
    now = time.time_ns()
    for index, (seq, motion, keepalive) in plan.items():
        jpeg = cv2.imencode(".jpg", images[index])[1].tobytes()
        if index == 0:
            jpeg = jpeg[:700] + bytes(64)  # the first frame does not decode: no reference for what follows
        meta = FrameMeta(CAMERA, seq, now + index * 200_000_000, 640, 480, "replay", frame_index=index,
                         motion=motion, keepalive=keepalive)  # fmt: skip
        producer.send(config.topics.frames.name, key=CAMERA.encode(), value=jpeg, headers=meta.to_headers())
    producer.flush()
    producer.close()

    with _running_worker(config, Detector.from_config(config.detect)) as worker:
        records = _read(config, config.topics.detections.name, len(plan) - 1, 120)
        letters = _read(config, config.topics.dead_letter.name, 1, 30)
    by_index = {r.frame_index: r for r in (DetectionsRecord.from_bytes(m.value) for m in records)}  # type: ignore[attr-defined]
    assert sorted(by_index) == [i for i in plan if i != 0], sorted(by_index)
    assert [DeadLetter.from_record(m).reason for m in letters] == [  # type: ignore[arg-type]
        "image of 764 bytes (jpeg, 640x480) does not decode"
    ]

    detected = {i for i, r in by_index.items() if r.reused_from is None}
    # Frame 1 had only the broken frame 0 to copy from; 7 moved; 9 is a keep-alive; 12 follows a missing seq.
    assert {1, 7, 9, 12} <= detected
    assert {5, 6, 8, 10, 13} <= set(by_index) - detected, detected
    offsets = {r.frame.offset: i for i, r in by_index.items()}
    for index, record in sorted(by_index.items()):
        if record.reused_from is None:
            assert record.timings.infer_ms > 0
            continue
        source = offsets[record.reused_from.offset]
        # The latest detected frame before it, boxes copied exactly, no model time spent.
        assert source == max(i for i in detected if i < index), (index, source)
        reference = by_index[source].detections
        assert (record.detections.xyxy == reference.xyxy).all() and len(reference) > 0
        assert record.class_names == by_index[source].class_names and record.timings.infer_ms == 0.0
    assert worker.reused == len(by_index) - len(detected)


def test_redone_still_frames_keep_their_own_letterbox_next_to_a_camera_of_another_size(
    vigil_config: VigilConfig,
) -> None:
    """One batch: camera `wide` (640x480) whose first frame does not decode, so its two still frames are
    decoded after all, into the rows after those of camera `tall` (360x480, another rectangular canvas).
    Each published record must carry the boxes of its own image, mapped back through its own letterbox."""
    data = vigil_config.model_dump(mode="json")
    data["cameras"] = [
        {"id": "wide", "url": str(FOOTAGE), "kind": "replay"},
        {"id": "tall", "url": str(FOOTAGE), "kind": "replay"},
    ]
    data["detect"].update({"model": "yolox_nano", "batch_size": 8, "max_wait_ms": 2000, "max_age_s": 3600})
    data["metrics"]["enabled"] = False
    config = VigilConfig.model_validate(data)
    ensure_topics(config.kafka, config.topics)
    images = read_frames(count=6, step=5)
    frames = {("wide", i): images[i] for i in range(3)} | {
        ("tall", i): np.ascontiguousarray(images[3 + i][:, 140:500]) for i in range(3)
    }
    jpegs = {key: cv2.imencode(".jpg", image)[1].tobytes() for key, image in frames.items()}
    jpegs["wide", 0] = jpegs["wide", 0][:700] + bytes(64)
    producer = make_producer(config.kafka, "test-still")
    now = time.time_ns()
    for (camera, seq), jpeg in jpegs.items():
        height, width = frames[camera, seq].shape[:2]
        motion = ((0, 0, 10, 10),) if camera == "tall" else ()  # tall: every frame detected; wide: still
        meta = FrameMeta(camera, seq, now + seq * 200_000_000, width, height, "replay", frame_index=seq, motion=motion)
        # wide on the first partition: gathered first, so its redone frames change places with tall's.
        partition = 0 if camera == "wide" else 1
        producer.send(
            config.topics.frames.name, key=camera.encode(), value=jpeg, headers=meta.to_headers(), partition=partition
        )
    producer.flush()
    producer.close()

    detector = Detector.from_config(config.detect)
    assert detector.rect, "the shipped YOLOX-Nano runs rectangular canvases"
    with _running_worker(config, detector) as worker:
        records = _read(config, config.topics.detections.name, 5, 120)
    published = {(r.camera_id, r.seq): r for r in (DetectionsRecord.from_bytes(m.value) for m in records)}  # type: ignore[attr-defined]
    assert sorted(published) == sorted(key for key in jpegs if key != ("wide", 0))
    assert worker.batches == 1, "the test needs every frame in one batch"
    for key, record in published.items():
        assert record.reused_from is None, key  # the wide camera's still frames lost their reference
        image = cv2.imdecode(np.frombuffer(jpegs[key], np.uint8), cv2.IMREAD_COLOR)
        expected = detector([image])[0]
        assert len(record.detections) == len(expected) > 0, key
        np.testing.assert_allclose(record.detections.xyxy, expected.xyxy, atol=0.5, err_msg=str(key))
