"""Message contracts of vigil's Kafka topics (schema version 1). See docs/messages.md.

Every record crossing a process boundary is one of the typed classes here, never a bare dict:

* frames topic      key = camera id, value = JPEG bytes, metadata in headers (`FrameMeta`).
* detections topic  key = camera id, value = JSON (`DetectionsRecord`).
* alerts topic      key = camera id, value = JSON (`AlertRecord`).
* dead-letter topic key/value = the original bytes, original headers plus `dlq-*` headers (`DeadLetter`).
* status topic      key = process name, value = JSON (`vigil.status.StatusRecord`): heartbeats.

Decoding never trusts its input: anything malformed raises `ContractError` with a reason that
names the field, which consumers put on the dead-letter topic.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from vigil.detections import Detections
from vigil.errors import ContractError

SCHEMA_VERSION = 1
Headers = list[tuple[str, bytes]]
# Header bounds, checked before anything is copied out of a record: every number fits a signed 64-bit
# integer (what Kafka, JSON consumers and numpy hold) in at most 19 digits, an image side JPEG's 65535,
# a header a few hundred bytes (motion boxes: up to MAX_MOTION_BOXES of them).
INT64_MAX = 2**63 - 1
MAX_IMAGE_SIDE = 65535
MAX_HEADER_BYTES = 256
MAX_MOTION_BOXES = 1024
MAX_MOTION_HEADER_BYTES = 64 * 1024
MAX_FRAME_HEADERS = 64
MAX_FRAME_HEADERS_BYTES = 128 * 1024
_INTEGER = re.compile(r"-?[0-9]{1,19}")
FrameSource = Literal["rtsp", "replay"]
AlertEvent = Literal["started", "updated", "ended"]


@runtime_checkable
class KafkaRecord(Protocol):
    """What stage logic needs of a consumed record; kafka-python's `ConsumerRecord` satisfies it."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


@dataclass(frozen=True)
class StubRecord:
    """An in-memory `KafkaRecord`, for tests and for replaying records without a broker."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()
    timestamp: int = 0


# ---------------------------------------------------------------------------------------------- helpers


def _header_map(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, bytes]:
    result: dict[str, bytes] = {}
    for item in headers or ():
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ContractError(f"header entry {item!r} is not a (name, bytes) pair")
        name, value = item
        result[str(name)] = bytes(value) if value is not None else b""
    return result


def _req_str(headers: Mapping[str, bytes], name: str, max_bytes: int = MAX_HEADER_BYTES) -> str:
    if name not in headers:
        raise ContractError(f"missing header {name!r}")
    if len(headers[name]) > max_bytes:
        raise ContractError(f"header {name!r} is {len(headers[name])} bytes, over the limit of {max_bytes}")
    try:
        text = headers[name].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ContractError(f"header {name!r} is not UTF-8") from exc
    if not text:
        raise ContractError(f"header {name!r} is empty")
    return text


def _req_int(headers: Mapping[str, bytes], name: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
    """A decimal integer in [minimum, maximum]: ASCII digits only (int() would also take '+1', ' 1',
    '1_000' and other scripts' digits), at most 19 of them, so nothing huge is ever parsed or copied."""
    text = _req_str(headers, name)
    if not _INTEGER.fullmatch(text):
        raise ContractError(f"header {name!r} must be an integer of at most 19 decimal digits, got {text[:40]!r}")
    number = int(text)
    if not minimum <= number <= maximum:
        raise ContractError(f"header {name!r} must be >= {minimum} and <= {maximum}, got {number}")
    return number


def _opt_int(headers: Mapping[str, bytes], name: str) -> int | None:
    return _req_int(headers, name) if name in headers else None


def _motion_boxes(raw: bytes) -> tuple[tuple[int, int, int, int], ...]:
    shape = '{"boxes": [[x1, y1, x2, y2], ...]}'
    if len(raw) > MAX_MOTION_HEADER_BYTES:
        raise ContractError(f"header 'motion' is {len(raw)} bytes, over the limit of {MAX_MOTION_HEADER_BYTES}")
    try:
        boxes = json.loads(raw)["boxes"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ContractError(f"header 'motion' must be {shape}: {exc}") from exc
    if not isinstance(boxes, list) or len(boxes) > MAX_MOTION_BOXES:
        raise ContractError(f"header 'motion' must be {shape} with at most {MAX_MOTION_BOXES} boxes")
    for box in boxes:
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_IMAGE_SIDE for v in box)
        ):
            raise ContractError(f"header 'motion': each box must be 4 integers in 0..{MAX_IMAGE_SIDE}, got {box!r:.80}")
    return tuple((b[0], b[1], b[2], b[3]) for b in boxes)


def _get(obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str = "") -> Any:
    if key not in obj:
        raise ContractError(f"missing field {where}{key!r}")
    value = obj[key]
    # bool is an int subclass; a JSON true where a number belongs is a contract violation.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise ContractError(f"field {where}{key!r} has type bool, expected {kind}")
    if not isinstance(value, kind):
        raise ContractError(f"field {where}{key!r} has type {type(value).__name__}, expected {kind}")
    return value


def _load_json(value: bytes | None, what: str) -> dict[str, Any]:
    if value is None:
        raise ContractError(f"{what} record has no value (tombstone)")
    try:
        obj = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ContractError(f"{what} value is not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ContractError(f"{what} value must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if schema != SCHEMA_VERSION:
        raise ContractError(f"{what} schema version {schema!r} is not supported (expected {SCHEMA_VERSION})")
    return obj


def _dumps(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")


# ---------------------------------------------------------------------------------------------- frames


@dataclass(frozen=True)
class FrameRef:
    """Where a frame lives in Kafka: lets any later stage find (and de-duplicate) the exact frame."""

    topic: str
    partition: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    @classmethod
    def from_json(cls, obj: Any, where: str = "frame.") -> FrameRef:
        if not isinstance(obj, dict):
            raise ContractError(f"field {where.rstrip('.')!r} must be an object")
        return cls(
            topic=_get(obj, "topic", str, where),
            partition=_get(obj, "partition", int, where),
            offset=_get(obj, "offset", int, where),
        )


@dataclass(frozen=True)
class FrameMeta:
    """Headers of a frames-topic record. The value is the encoded image itself.

    `seq` counts published frames per camera; `frame_index` is the source's own frame number
    (0-based; MOT ground truth frame = frame_index + 1) and `media_ns` its position in the
    stream, both set by replay so evaluation can match ground truth frame by frame.
    """

    camera_id: str
    seq: int
    capture_ns: int
    width: int
    height: int
    source: FrameSource
    encoding: str = "jpeg"
    media_ns: int | None = None
    frame_index: int | None = None
    motion: tuple[tuple[int, int, int, int], ...] | None = None
    keepalive: bool = False

    def to_headers(self) -> Headers:
        headers: Headers = [
            ("vigil-schema", str(SCHEMA_VERSION).encode()),
            ("camera", self.camera_id.encode()),
            ("seq", str(self.seq).encode()),
            ("capture-ns", str(self.capture_ns).encode()),
            ("width", str(self.width).encode()),
            ("height", str(self.height).encode()),
            ("encoding", self.encoding.encode()),
            ("source", self.source.encode()),
        ]
        if self.media_ns is not None:
            headers.append(("media-ns", str(self.media_ns).encode()))
        if self.frame_index is not None:
            headers.append(("frame-index", str(self.frame_index).encode()))
        if self.motion is not None:
            headers.append(("motion", _dumps({"boxes": [list(b) for b in self.motion]})))
        if self.keepalive:
            headers.append(("keepalive", b"1"))
        return headers

    @classmethod
    def from_headers(cls, headers: Sequence[tuple[str, bytes]] | None) -> FrameMeta:
        items = list(headers or ())
        if len(items) > MAX_FRAME_HEADERS:
            raise ContractError(f"frame has {len(items)} headers, over the limit of {MAX_FRAME_HEADERS}")
        h = _header_map(items)
        total = sum(len(k) + len(v) for k, v in h.items())
        if total > MAX_FRAME_HEADERS_BYTES:
            raise ContractError(f"frame headers total {total} bytes, over the limit of {MAX_FRAME_HEADERS_BYTES}")
        schema = _req_str(h, "vigil-schema")
        if schema != str(SCHEMA_VERSION):
            raise ContractError(f"frame schema version {schema!r} is not supported (expected {SCHEMA_VERSION})")
        source = _req_str(h, "source")
        if source not in ("rtsp", "replay"):
            raise ContractError(f"header 'source' must be 'rtsp' or 'replay', got {source!r}")
        return cls(
            camera_id=_req_str(h, "camera"),
            seq=_req_int(h, "seq"),
            capture_ns=_req_int(h, "capture-ns"),
            width=_req_int(h, "width", minimum=1, maximum=MAX_IMAGE_SIDE),
            height=_req_int(h, "height", minimum=1, maximum=MAX_IMAGE_SIDE),
            source=source,  # type: ignore[arg-type]  # checked above
            encoding=_req_str(h, "encoding"),
            media_ns=_opt_int(h, "media-ns"),
            frame_index=_opt_int(h, "frame-index"),
            motion=_motion_boxes(h["motion"]) if "motion" in h else None,
            keepalive=h.get("keepalive") == b"1",
        )


# ---------------------------------------------------------------------------------------------- detections


@dataclass(frozen=True)
class Timings:
    """Milliseconds spent per step for one frame (batch steps are shared by the batch's frames).

    `queue_wait` runs from the frame's Kafka timestamp to the start of its batch and includes `batch_wait`,
    the part after the worker had fetched it (waiting for the batch to fill); `infer_wait` is the time the
    prepared batch waited for the inference thread (the previous batch still running)."""

    decode_ms: float = 0.0
    infer_ms: float = 0.0
    post_ms: float = 0.0
    queue_wait_ms: float = 0.0
    batch_wait_ms: float = 0.0
    infer_wait_ms: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {
            "decode": round(self.decode_ms, 3),
            "infer": round(self.infer_ms, 3),
            "post": round(self.post_ms, 3),
            "queue_wait": round(self.queue_wait_ms, 3),
            "batch_wait": round(self.batch_wait_ms, 3),
            "infer_wait": round(self.infer_wait_ms, 3),
        }

    @classmethod
    def from_json(cls, obj: Any) -> Timings:
        if not isinstance(obj, dict):
            raise ContractError("field 'timings_ms' must be an object")

        def optional(name: str) -> float:  # added after schema 1 shipped: absent in older records
            return float(_get(obj, name, (int, float), "timings_ms.")) if name in obj else 0.0

        return cls(
            decode_ms=float(_get(obj, "decode", (int, float), "timings_ms.")),
            infer_ms=float(_get(obj, "infer", (int, float), "timings_ms.")),
            post_ms=float(_get(obj, "post", (int, float), "timings_ms.")),
            queue_wait_ms=float(_get(obj, "queue_wait", (int, float), "timings_ms.")),
            batch_wait_ms=optional("batch_wait"),
            infer_wait_ms=optional("infer_wait"),
        )


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str


@dataclass(frozen=True, eq=False)
class DetectionsRecord:
    """The detections of one frame. Boxes are `xyxy` in source-image pixels.

    `reused_from`: set for a still frame (no motion) that was not run through the model; its detections are
    those of that earlier frame of the camera (`detect.stationary`)."""

    camera_id: str
    seq: int
    capture_ns: int
    frame: FrameRef
    model: ModelRef
    width: int
    height: int
    detections: Detections
    class_names: tuple[str, ...]
    timings: Timings = field(default_factory=Timings)
    media_ns: int | None = None
    frame_index: int | None = None
    produced_ns: int = 0
    reused_from: FrameRef | None = None

    def __post_init__(self) -> None:
        if len(self.class_names) != len(self.detections):
            raise ContractError(
                f"class_names has {len(self.class_names)} entries but detections has {len(self.detections)}"
            )

    @property
    def frame_key(self) -> str:
        """Identity of the source frame; consumers use it to drop at-least-once duplicates."""
        return f"{self.frame.topic}/{self.frame.partition}/{self.frame.offset}"

    def to_json(self) -> dict[str, Any]:
        d = self.detections
        return {
            "schema": SCHEMA_VERSION,
            "camera": self.camera_id,
            "seq": self.seq,
            "capture_ns": self.capture_ns,
            "media_ns": self.media_ns,
            "frame_index": self.frame_index,
            "frame": self.frame.to_json(),
            "model": {"name": self.model.name, "version": self.model.version},
            "image": {"width": self.width, "height": self.height},
            "boxes": np.round(d.xyxy.astype(np.float64), 2).tolist(),
            "class_ids": d.class_id.tolist(),
            "class_names": list(self.class_names),
            "scores": np.round(d.confidence.astype(np.float64), 5).tolist(),
            "timings_ms": self.timings.to_json(),
            "produced_ns": self.produced_ns,
            "reused_from": None if self.reused_from is None else self.reused_from.to_json(),
        }

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())

    @classmethod
    def from_bytes(cls, value: bytes | None) -> DetectionsRecord:
        obj = _load_json(value, "detections")
        boxes = _get(obj, "boxes", list)
        class_ids = _get(obj, "class_ids", list)
        scores = _get(obj, "scores", list)
        names = _get(obj, "class_names", list)
        if not (len(boxes) == len(class_ids) == len(scores) == len(names)):
            raise ContractError(
                f"boxes ({len(boxes)}), class_ids ({len(class_ids)}), scores ({len(scores)}) and "
                f"class_names ({len(names)}) must have the same length"
            )
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in class_ids):
            raise ContractError("class_ids must be non-negative integers")
        try:
            xyxy = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            conf = np.asarray(scores, dtype=np.float32)
            cls_arr = np.asarray(class_ids, dtype=np.int32)
        except (ValueError, TypeError) as exc:
            raise ContractError(f"boxes must be [[x1,y1,x2,y2], ...] of numbers: {exc}") from exc
        if xyxy.shape[0] != len(boxes) or not np.all(np.isfinite(xyxy)) or not np.all(np.isfinite(conf)):
            raise ContractError("boxes and scores must be finite numbers, 4 per box")
        model = _get(obj, "model", dict)
        image = _get(obj, "image", dict)
        if _get(obj, "seq", int) < 0:
            raise ContractError("field 'seq' must be >= 0")
        media_ns = obj.get("media_ns")
        frame_index = obj.get("frame_index")
        return cls(
            camera_id=_get(obj, "camera", str),
            seq=_get(obj, "seq", int),
            capture_ns=_get(obj, "capture_ns", int),
            media_ns=media_ns if isinstance(media_ns, int) else None,
            frame_index=frame_index if isinstance(frame_index, int) else None,
            frame=FrameRef.from_json(_get(obj, "frame", dict)),
            model=ModelRef(name=_get(model, "name", str, "model."), version=_get(model, "version", str, "model.")),
            width=_get(image, "width", int, "image."),
            height=_get(image, "height", int, "image."),
            detections=Detections(xyxy=xyxy, confidence=conf, class_id=cls_arr),
            class_names=tuple(str(n) for n in names),
            timings=Timings.from_json(_get(obj, "timings_ms", dict)),
            produced_ns=int(obj.get("produced_ns") or 0),
            reused_from=FrameRef.from_json(reused, "reused_from.") if (reused := obj.get("reused_from")) else None,
        )


# ---------------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class AlertRecord:
    """One alert lifecycle event. `alert_id` is deterministic: a hash of camera, rule, the capture
    time of the first frame that satisfied the rule, class and box (not the track id, which a
    restarted tracker numbers anew), so a repeat after a restart carries the same id. The webhook
    id is `alert_id` + event (+ `update_seq` for updates)."""

    alert_id: str
    event: AlertEvent
    camera_id: str
    rule: str
    zone: str | None
    class_name: str
    class_id: int
    track_id: int
    confidence: float
    box: tuple[float, float, float, float]
    first_seen_ns: int
    last_seen_ns: int
    frame: FrameRef
    latency_ms: float
    snapshot: str | None = None
    snapshot_kind: Literal["none", "base64_jpeg", "frame_ref"] = "none"
    # Numbers the `updated` events of one alert (1, 2, ...), so each has its own webhook id.
    update_seq: int = 0
    # The tracks that carried the alert, oldest first (the tracker lost the object and found it
    # again as a new track); `rejoined` marks the `updated` event sent when one took over.
    track_ids: tuple[int, ...] = ()
    rejoined: bool = False

    @property
    def webhook_id(self) -> str:
        if self.event == "updated":
            return f"{self.alert_id}.updated.{self.update_seq}"
        return f"{self.alert_id}.{self.event}"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "id": self.alert_id,
            "event": self.event,
            "camera": self.camera_id,
            "rule": self.rule,
            "zone": self.zone,
            "class_name": self.class_name,
            "class_id": self.class_id,
            "track_id": self.track_id,
            "confidence": round(self.confidence, 5),
            "box": [round(v, 2) for v in self.box],
            "first_seen_ns": self.first_seen_ns,
            "last_seen_ns": self.last_seen_ns,
            "frame": self.frame.to_json(),
            "latency_ms": round(self.latency_ms, 3),
            "snapshot": {"kind": self.snapshot_kind, "data": self.snapshot},
            "update_seq": self.update_seq,
            "track_ids": list(self.track_ids),
            "rejoined": self.rejoined,
        }

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())

    @classmethod
    def from_bytes(cls, value: bytes | None) -> AlertRecord:
        obj = _load_json(value, "alert")
        event = _get(obj, "event", str)
        if event not in ("started", "updated", "ended"):
            raise ContractError(f"field 'event' must be started, updated or ended, got {event!r}")
        box = _get(obj, "box", list)
        if len(box) != 4 or not all(isinstance(v, int | float) and math.isfinite(v) for v in box):
            raise ContractError("field 'box' must be [x1, y1, x2, y2] of finite numbers")
        snapshot = _get(obj, "snapshot", dict)
        kind = snapshot.get("kind", "none")
        if kind not in ("none", "base64_jpeg", "frame_ref"):
            raise ContractError(f"field 'snapshot.kind' must be none, base64_jpeg or frame_ref, got {kind!r}")
        zone = obj.get("zone")
        update_seq = obj.get("update_seq", 0)
        if isinstance(update_seq, bool) or not isinstance(update_seq, int) or update_seq < 0:
            raise ContractError("field 'update_seq' must be a non-negative integer")
        track_ids = obj.get("track_ids", [])
        if (
            not isinstance(track_ids, list)
            or len(track_ids) > 1000
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in track_ids)
        ):
            raise ContractError("field 'track_ids' must be a list of at most 1000 integers")
        rejoined = obj.get("rejoined", False)
        if not isinstance(rejoined, bool):
            raise ContractError("field 'rejoined' must be true or false")
        return cls(
            alert_id=_get(obj, "id", str),
            event=event,  # checked above
            camera_id=_get(obj, "camera", str),
            rule=_get(obj, "rule", str),
            zone=zone if isinstance(zone, str) else None,
            class_name=_get(obj, "class_name", str),
            class_id=_get(obj, "class_id", int),
            track_id=_get(obj, "track_id", int),
            confidence=float(_get(obj, "confidence", (int, float))),
            box=(float(box[0]), float(box[1]), float(box[2]), float(box[3])),
            first_seen_ns=_get(obj, "first_seen_ns", int),
            last_seen_ns=_get(obj, "last_seen_ns", int),
            frame=FrameRef.from_json(_get(obj, "frame", dict)),
            latency_ms=float(_get(obj, "latency_ms", (int, float))),
            snapshot=snapshot.get("data") if isinstance(snapshot.get("data"), str) else None,
            snapshot_kind=kind,
            update_seq=update_seq,
            track_ids=tuple(track_ids),
            rejoined=rejoined,
        )


# ---------------------------------------------------------------------------------------------- dead letters

DLQ_HEADERS = ("dlq-reason", "dlq-stage", "dlq-topic", "dlq-partition", "dlq-offset", "dlq-time-ns")


@dataclass(frozen=True)
class DeadLetter:
    """A record a stage could not process. The original key, value and headers are kept byte for
    byte; the reason and provenance travel in `dlq-*` headers, so the record can be inspected and
    re-published as it was."""

    stage: str
    reason: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    time_ns: int = 0

    @classmethod
    def of(cls, record: KafkaRecord, stage: str, reason: str, time_ns: int = 0) -> DeadLetter:
        return cls(
            stage=stage,
            reason=reason,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            key=record.key,
            value=record.value,
            headers=tuple((str(k), bytes(v or b"")) for k, v in (record.headers or ())),
            time_ns=time_ns,
        )

    def to_headers(self) -> Headers:
        original = [(k, v) for k, v in self.headers if k not in DLQ_HEADERS]
        return original + [
            # Cut the text, not its bytes: a multi-byte character split in two is not UTF-8.
            ("dlq-reason", self.reason[:2000].encode("utf-8", "replace")),
            ("dlq-stage", self.stage.encode()),
            ("dlq-topic", self.topic.encode()),
            ("dlq-partition", str(self.partition).encode()),
            ("dlq-offset", str(self.offset).encode()),
            ("dlq-time-ns", str(self.time_ns).encode()),
        ]

    @classmethod
    def from_record(cls, record: KafkaRecord) -> DeadLetter:
        h = _header_map(record.headers)
        return cls(
            stage=_req_str(h, "dlq-stage"),
            reason=_req_str(h, "dlq-reason", max_bytes=4 * 2000),  # 2000 characters of up to 4 bytes
            topic=_req_str(h, "dlq-topic"),
            partition=_req_int(h, "dlq-partition"),
            offset=_req_int(h, "dlq-offset"),
            key=record.key,
            value=record.value,
            headers=tuple((k, v) for k, v in (record.headers or ()) if k not in DLQ_HEADERS),
            time_ns=_req_int(h, "dlq-time-ns"),
        )
