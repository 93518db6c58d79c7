"""Snapshots and clips from the frames topic, which is vigil's recording buffer.

* A snapshot is the alert's own frame (its `frame` reference), annotated with the core's
  `vigil.draw.annotate_alert`: zone, box, label and score.
* A clip is an H.264 MP4 from `web.clip_pre_s` before the alert's start to `web.clip_post_s` after
  its end. The producer keys frames by camera, so the camera's partition is the one kafka-python's
  default partitioner picks (murmur2 of the key); `offsets_for_times` finds where the window
  starts, and records are filtered by the `camera` header (cameras share partitions). Frames are
  decoded one at a time (bounded by `web.max_pixels`) and streamed into the encoder with their
  capture times as presentation times, so variable frame rates play at true speed and a clip's
  memory does not grow with its length.

Built media is cached on disk (`web.clip_cache_dir`, `web.clip_cache_mb`, least recently used
first out); concurrent requests for the same clip build it once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition
from prometheus_client import Counter, Histogram

from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, FrameMeta, FrameRef
from vigil.errors import ContractError, VigilError
from vigil.imaging import decode_image
from vigil.kafka import make_consumer
from web.store import StoredAlert

log = logging.getLogger(__name__)
NS = 1_000_000_000
# Send time (the record timestamp) follows capture by the ingest queue's delay; search this far back.
SLACK_MS = 5_000
BUILDS = Counter("vigil_web_media_builds_total", "Snapshots and clips built from the frames topic", ["kind", "result"])
BUILD_SECONDS = Histogram(
    "vigil_web_clip_build_seconds", "Time to build one clip", buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30)
)


class MediaError(VigilError):
    status = 500


class MediaGone(MediaError):
    """The frames aged out of the frames topic (410)."""

    status = 410


class MediaNotFound(MediaError):
    status = 404


class MediaPending(MediaError):
    """The clip's post-roll is still in the future (202)."""

    status = 202

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def partition_for(camera_id: str, partitions: int) -> int:
    """The partition kafka-python's DefaultPartitioner sends a camera's frames to."""
    return int(murmur2(camera_id.encode()) & 0x7FFFFFFF) % partitions


def alert_record(alert: StoredAlert) -> AlertRecord:
    """The stored alert as the core's drawing code takes it."""
    return AlertRecord(
        alert_id=alert.id, event="ended" if alert.ended_ns else "started", camera_id=alert.camera, rule=alert.rule,
        zone=alert.zone, class_name=alert.label, class_id=alert.class_id, track_id=alert.track_id,
        confidence=alert.score, box=alert.box, first_seen_ns=alert.started_ns, last_seen_ns=alert.last_seen_ns,
        frame=FrameRef(alert.frame_topic, alert.frame_partition, alert.frame_offset), latency_ms=alert.latency_ms,
    )  # fmt: skip


def _retention_text(config: VigilConfig) -> str:
    ms = config.topics.frames.retention_ms
    if ms is None:
        return "the broker's default retention (topics.frames.retention_ms is not set)"
    return f"topics.frames.retention_ms ({ms / 3_600_000:g} h)"


class FrameReader:
    """Reads frames back from the frames topic with a small pool of group-less consumers."""

    def __init__(self, config: VigilConfig, pool_size: int = 2) -> None:
        self.config = config
        self.topic = config.topics.frames.name
        self._pool: queue.Queue[Any] = queue.Queue()
        self._created = 0
        self._pool_size = pool_size
        self._lock = threading.Lock()

    @contextmanager
    def consumer(self) -> Iterator[Any]:
        try:
            consumer = self._pool.get_nowait()
        except queue.Empty:
            with self._lock:
                create = self._created < self._pool_size
                self._created += create
            consumer = (
                make_consumer(self.config.kafka, "web-media", None, max_partition_fetch_bytes=2 * 1024 * 1024)
                if create
                else self._pool.get(timeout=60)
            )
        try:
            yield consumer
        finally:
            consumer.assign([])
            self._pool.put(consumer)

    def close(self) -> None:
        while True:
            try:
                self._pool.get_nowait().close()
            except queue.Empty:
                return

    def gone(self, what: str) -> MediaGone:
        return MediaGone(
            f"the frames of {what} are older than {_retention_text(self.config)}; raise it to keep media longer"
        )

    def frame(self, ref: FrameRef, what: str) -> tuple[FrameMeta, bytes]:
        tp = TopicPartition(ref.topic, ref.partition)
        with self.consumer() as consumer:
            consumer.assign([tp])
            start, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
            if ref.offset < start:
                raise self.gone(what)
            if ref.offset >= end:
                raise MediaNotFound(f"frame {ref.topic}/{ref.partition}/{ref.offset} of {what} is not on the topic")
            consumer.seek(tp, ref.offset)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500, max_records=1).values():
                    for record in records:
                        if record.offset != ref.offset:
                            raise self.gone(what)  # compacted or deleted under us
                        return FrameMeta.from_headers(record.headers), bytes(record.value or b"")
        raise MediaError(f"reading frame {ref.topic}/{ref.partition}/{ref.offset} timed out; is Kafka up?")

    def frames(
        self, camera_id: str, start_ns: int, end_ns: int, what: str, partition: int
    ) -> Iterator[tuple[FrameMeta, bytes]]:
        """The camera's frames with start_ns <= capture_ns <= end_ns, in order, one at a time."""
        tp = TopicPartition(self.topic, partition)
        with self.consumer() as consumer:
            consumer.assign([tp])
            first, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
            found = consumer.offsets_for_times({tp: max(0, start_ns // 1_000_000 - SLACK_MS)})[tp]
            if found is None:
                return
            consumer.seek(tp, max(first, found.offset))
            position = max(first, found.offset)
            deadline = time.monotonic() + 120
            while position < end and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    for record in records:
                        position = record.offset + 1
                        if record.offset >= end or record.timestamp > end_ns // 1_000_000 + SLACK_MS:
                            return
                        try:
                            meta = FrameMeta.from_headers(record.headers)
                        except ContractError:
                            continue  # detect dead-letters malformed frames; a clip just skips them
                        if meta.camera_id != camera_id or meta.capture_ns < start_ns:
                            continue
                        if meta.capture_ns > end_ns:
                            return
                        yield meta, bytes(record.value or b"")


@dataclass(frozen=True)
class ClipStats:
    frames: int
    seconds: float
    bytes: int


def encode_clip(path: Path, frames: Iterator[tuple[FrameMeta, bytes]], max_pixels: int, fps_hint: float) -> ClipStats:
    """Stream frames into an H.264 MP4 at `path` (faststart, so a browser plays it while loading)."""
    import av
    import cv2
    import numpy as np

    started = time.monotonic()
    container: Any = None
    stream: Any = None
    first_ns = last_pts = -1
    size: tuple[int, int] = (0, 0)
    count = 0
    try:
        for meta, jpeg in frames:
            try:
                image = decode_image(jpeg, max_pixels, expect_wh=(meta.width, meta.height), setting="web.max_pixels")
            except ContractError as exc:
                log.debug("clip: skipped frame %s/%d: %s", meta.camera_id, meta.seq, exc)
                continue
            if container is None:
                # yuv420p needs even sides.
                size = (image.shape[1] // 2 * 2, image.shape[0] // 2 * 2)
                container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
                stream = container.add_stream("libx264", rate=max(1, round(fps_hint)))
                stream.width, stream.height = size
                stream.pix_fmt = "yuv420p"
                stream.time_base = Fraction(1, 1000)
                stream.codec_context.time_base = Fraction(1, 1000)
                # ultrafast: a 20 s clip builds in well under a second on one loaded core; the files are
                # about twice the size of `veryfast`'s, which the cache cap absorbs.
                stream.options = {"preset": "ultrafast", "crf": "27"}
                first_ns = meta.capture_ns
            if (image.shape[1], image.shape[0]) != size:
                image = np.ascontiguousarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
            pts = (meta.capture_ns - first_ns) // 1_000_000
            if pts <= last_pts:
                continue  # presentation times must grow; a repeated capture time adds nothing
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            last_pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
            count += 1
        if container is None:
            raise MediaNotFound("no frames of this alert's camera in the clip's time window")
        for packet in stream.encode(None):
            container.mux(packet)
    finally:
        if container is not None:
            container.close()
    return ClipStats(count, time.monotonic() - started, path.stat().st_size)


class MediaCache:
    """Files under `folder`, at most `max_bytes` in all; the least recently used go first."""

    def __init__(self, folder: str | Path, max_bytes: int) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def path(self, key: str, suffix: str) -> Path:
        # Alert ids come from a topic: the file name is a hash, never the id itself.
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:40]}{suffix}"

    def hit(self, path: Path) -> bool:
        try:
            os.utime(path)
        except FileNotFoundError:
            return False
        return True

    @contextmanager
    def building(self, key: str) -> Iterator[None]:
        """One builder per key; others wait here and then find the file built."""
        with self._lock:
            lock = self._building.setdefault(key, threading.Lock())
        with lock:
            yield
        with self._lock:
            if self._building.get(key) is lock and not lock.locked():
                del self._building[key]

    def evict(self, keep: Path | None = None) -> int:
        files = []
        for entry in self.folder.glob("*"):
            if entry.name.startswith("."):
                continue  # a build in progress, or an active alert's clip being served
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue
            files.append((stat.st_mtime, stat.st_size, entry))
        total = sum(size for _, size, _ in files)
        removed = 0
        for _, size, entry in sorted(files, key=lambda f: f[0]):
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            entry.unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed
