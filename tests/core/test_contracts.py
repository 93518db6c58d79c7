"""Round trips of every message contract, and the exact errors for malformed records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vigil.contracts import (
    AlertRecord,
    DeadLetter,
    DetectionsRecord,
    FrameMeta,
    FrameRef,
    KafkaRecord,
    ModelRef,
    StubRecord,
    Timings,
)
from vigil.detections import Detections
from vigil.errors import ContractError


def make_detections_record(n: int = 3) -> DetectionsRecord:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, size=(n, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(5, 100, size=(n, 2))], axis=1)
    return DetectionsRecord(
        camera_id="cam-1",
        seq=42,
        capture_ns=1_700_000_000_000_000_000,
        media_ns=1_680_000_000,
        frame_index=42,
        frame=FrameRef("vigil.frames", 2, 1234),
        model=ModelRef("yolox_nano", "1"),
        width=640,
        height=480,
        detections=Detections(xyxy=xyxy, confidence=rng.uniform(0, 1, n), class_id=np.arange(n) % 2),
        class_names=tuple("person" if i % 2 == 0 else "bicycle" for i in range(n)),
        timings=Timings(decode_ms=1.5, infer_ms=20.25, post_ms=0.5, queue_wait_ms=3.0),
        produced_ns=1_700_000_000_100_000_000,
    )


def test_frame_meta_round_trip_with_optional_fields() -> None:
    meta = FrameMeta(
        camera_id="front",
        seq=7,
        capture_ns=123,
        width=640,
        height=480,
        source="replay",
        media_ns=280_000_000,
        frame_index=7,
        motion=((1, 2, 30, 40), (50, 60, 70, 80)),
        keepalive=True,
    )
    assert FrameMeta.from_headers(meta.to_headers()) == meta
    minimal = FrameMeta("front", 0, 1, 2, 3, "rtsp")
    assert FrameMeta.from_headers(minimal.to_headers()) == minimal
    names = [name for name, _ in minimal.to_headers()]
    assert "motion" not in names and "frame-index" not in names


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h: [x for x in h if x[0] != "camera"], "missing header 'camera'"),
        (lambda h: [(k, b"abc" if k == "seq" else v) for k, v in h], "header 'seq' must be an integer"),
        (lambda h: [(k, b"-1" if k == "seq" else v) for k, v in h], "header 'seq' must be >= 0"),
        (lambda h: [(k, b"0" if k == "width" else v) for k, v in h], "header 'width' must be >= 1"),
        (lambda h: [(k, b"2" if k == "vigil-schema" else v) for k, v in h], "schema version '2' is not supported"),
        (lambda h: [(k, b"usb" if k == "source" else v) for k, v in h], "header 'source' must be 'rtsp' or 'replay'"),
        (lambda h: [*h, ("motion", b"[1,2]")], "header 'motion' must be"),
        (lambda h: [(k, b"\xff" if k == "camera" else v) for k, v in h], "header 'camera' is not UTF-8"),
        (lambda h: [*h, ("oops",)], "is not a (name, bytes) pair"),
        # Hostile numbers and sizes: refused before anything is parsed into a huge int or copied out.
        (lambda h: [(k, b"9" * 400 if k == "seq" else v) for k, v in h], "header 'seq' is 400 bytes, over the limit"),
        (lambda h: [(k, b"9" * 20 if k == "seq" else v) for k, v in h], "'seq' must be an integer of at most 19"),
        (lambda h: [(k, b"9" * 19 if k == "capture-ns" else v) for k, v in h], "'capture-ns' must be >= 0 and <= 9"),
        (lambda h: [(k, b"+5" if k == "seq" else v) for k, v in h], "header 'seq' must be an integer"),
        (lambda h: [(k, b"1_000" if k == "seq" else v) for k, v in h], "header 'seq' must be an integer"),
        (lambda h: [(k, "٣".encode() if k == "seq" else v) for k, v in h], "header 'seq' must be an integer"),
        (lambda h: [(k, b"65536" if k == "width" else v) for k, v in h], "header 'width' must be >= 1 and <= 65535"),
        (lambda h: [(k, b"70000" if k == "height" else v) for k, v in h], "header 'height' must be >= 1 and <= 65535"),
        (lambda h: [*h, ("media-ns", b"-5")], "header 'media-ns' must be >= 0"),
        (lambda h: [*h, ("frame-index", b"1" * 30)], "header 'frame-index' must be an integer of at most 19"),
        (lambda h: [(k, b"c" * 300 if k == "camera" else v) for k, v in h], "header 'camera' is 300 bytes"),
        (lambda h: [*h, ("motion", b'{"boxes": [[0, 0, 1e9, 1]]}')], "each box must be 4 integers in 0..65535"),
        (lambda h: [*h, ("motion", b'{"boxes": [[0, 0, 99999999999999999999999, 1]]}')], "each box must be 4"),
        (lambda h: [*h, ("motion", b'{"boxes": [[0, 0, 1]]}')], "each box must be 4 integers"),
        (lambda h: [*h, ("motion", json.dumps({"boxes": [[0, 0, 1, 1]] * 1025}).encode())], "at most 1024 boxes"),
        (lambda h: [*h, ("motion", b" " * 70_000)], "header 'motion' is 70000 bytes, over the limit of 65536"),
        (lambda h: [*h, *[(f"x-{i}", b"") for i in range(60)]], "frame has 68 headers, over the limit of 64"),
        (lambda h: [*h, *[(f"x-{i}", b"z" * 5000) for i in range(30)]], "frame headers total"),
    ],
)
def test_frame_meta_rejects_bad_headers(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    headers = FrameMeta("front", 1, 2, 640, 480, "rtsp").to_headers()
    with pytest.raises(ContractError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        FrameMeta.from_headers(mutate(headers))


def test_frame_meta_accepts_the_largest_sane_values() -> None:
    big = FrameMeta("c" * 64, 2**63 - 1, 2**63 - 1, 65535, 65535, "replay", media_ns=2**63 - 1, frame_index=2**63 - 1,
                    motion=tuple((0, 0, 65535, 65535) for _ in range(1024)))  # fmt: skip
    assert FrameMeta.from_headers(big.to_headers()) == big


def test_detections_record_round_trip() -> None:
    record = make_detections_record()
    decoded = DetectionsRecord.from_bytes(record.to_bytes())
    assert decoded.to_json() == record.to_json()
    np.testing.assert_allclose(decoded.detections.xyxy, record.detections.xyxy, atol=0.01)
    np.testing.assert_allclose(decoded.detections.confidence, record.detections.confidence, atol=1e-5)
    assert decoded.class_names == record.class_names
    assert decoded.frame_key == "vigil.frames/2/1234"


def test_empty_detections_round_trip() -> None:
    record = make_detections_record(0)
    decoded = DetectionsRecord.from_bytes(record.to_bytes())
    assert len(decoded.detections) == 0
    assert decoded.detections.xyxy.shape == (0, 4)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda o: o.pop("camera"), "missing field 'camera'"),
        (lambda o: o.update(seq="7"), "field 'seq' has type str"),
        (lambda o: o.update(seq=True), "field 'seq' has type bool"),
        (lambda o: o.update(schema=9), "schema version 9 is not supported"),
        (lambda o: o["scores"].pop(), "must have the same length"),
        (lambda o: o.update(boxes=[[1, 2, 3]] * 3), "boxes must be"),
        (lambda o: o["frame"].pop("offset"), "missing field frame.'offset'"),
        (lambda o: o["timings_ms"].update(infer="x"), "timings_ms.'infer'"),
        (lambda o: o.update(class_ids=[0.7, 1, 0]), "class_ids must be non-negative integers"),
        (lambda o: o.update(seq=-1), "field 'seq' must be >= 0"),
    ],
)
def test_detections_record_rejects_malformed(edit, reason: str) -> None:  # type: ignore[no-untyped-def]
    obj = make_detections_record().to_json()
    edit(obj)
    with pytest.raises(ContractError, match=reason.replace("(", r"\(").replace(".", r"\.")):
        DetectionsRecord.from_bytes(json.dumps(obj).encode())


@pytest.mark.parametrize(
    ("value", "reason"),
    [(None, "tombstone"), (b"\x00\xff", "not JSON"), (b"[1]", "must be a JSON object"), (b'{"a": 1}', "schema")],
)
def test_detections_record_rejects_non_records(value: bytes | None, reason: str) -> None:
    with pytest.raises(ContractError, match=reason):
        DetectionsRecord.from_bytes(value)


def test_alert_record_round_trip() -> None:
    alert = AlertRecord(
        alert_id="a1b2c3",
        event="started",
        camera_id="front",
        rule="person-on-porch",
        zone="porch",
        class_name="person",
        class_id=0,
        track_id=12,
        confidence=0.91,
        box=(1.0, 2.0, 3.5, 4.25),
        first_seen_ns=10,
        last_seen_ns=20,
        frame=FrameRef("vigil.frames", 0, 99),
        latency_ms=120.5,
        snapshot="vigil.frames/0/99",
        snapshot_kind="frame_ref",
    )
    assert AlertRecord.from_bytes(alert.to_bytes()) == alert
    assert alert.webhook_id == "a1b2c3.started"
    obj = alert.to_json()
    obj["event"] = "exploded"
    with pytest.raises(ContractError, match="field 'event' must be"):
        AlertRecord.from_bytes(json.dumps(obj).encode())


def test_dead_letter_keeps_original_bytes_and_headers() -> None:
    original = StubRecord(
        topic="vigil.frames",
        partition=1,
        offset=77,
        key=b"cam",
        value=b"\xff\xd8 not a jpeg",
        headers=[("camera", b"cam"), ("seq", b"3")],
    )
    assert isinstance(original, KafkaRecord)
    letter = DeadLetter.of(original, stage="detect", reason="undecodable JPEG", time_ns=5)
    stored = StubRecord("vigil.dead-letter", 0, 0, letter.key, letter.value, letter.to_headers())
    back = DeadLetter.from_record(stored)
    assert back == letter
    assert back.value == original.value and back.key == original.key
    assert list(back.headers) == list(original.headers)


def test_dead_letter_of_a_dead_letter_does_not_stack_headers() -> None:
    first = DeadLetter.of(StubRecord("t", 0, 1, None, b"x", [("a", b"1")]), "detect", "bad", 1)
    stored = StubRecord("dlq", 0, 0, first.key, first.value, first.to_headers())
    second = DeadLetter.of(stored, "alerts", "still bad", 2)
    names = [name for name, _ in second.to_headers()]
    assert names.count("dlq-reason") == 1


def test_dead_letter_reason_is_cut_as_text() -> None:
    record = StubRecord("t", 0, 1, None, b"x")
    letter = DeadLetter.of(record, "detect", "é" * 5000, 1)
    stored = StubRecord("dlq", 0, 0, None, b"x", letter.to_headers())
    assert DeadLetter.from_record(stored).reason == "é" * 2000
