"""Snapshots and clips from the frames topic, which is vigil's recording buffer.

* A snapshot is the alert's own frame (its `frame` reference), annotated with the core's
  `vigil.draw.annotate_alert`: zone, box, label and score.
* A clip is an H.264 MP4 from `web.clip_pre_s` before the alert's start to `web.clip_post_s` after
  its end. The producer keys frames by camera, so the camera's frames are on the partition of the
  alert's own frame; `offsets_for_times` finds where the window starts, and records are filtered
  by the `camera` header (cameras share partitions). Frames are
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
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError, UnknownTopicOrPartitionError
from kafka.structs import TopicPartition
from prometheus_client import Counter, Histogram

from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, FrameMeta, FrameRef
from vigil.errors import ContractError, VigilError
from vigil.imaging import decode_image, resize_down
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


class TopicGone(MediaGone):
    """The alert's frames topic (or its partition) does not exist any more (410)."""


class MediaNotFound(MediaError):
    status = 404


class MediaRetry(MediaError):
    """An answer that says when to ask again (`Retry-After`)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class MediaPending(MediaRetry):
    """The clip's post-roll is still in the future (202)."""

    status = 202


class MediaUnavailable(MediaRetry):
    """Kafka did not answer within `web.media_timeout_s`, or every frame reader is busy (503)."""

    status = 503


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
    """Reads frames back from the frames topic with a small pool of group-less consumers.

    Every wait on Kafka is bounded by `web.media_timeout_s` (kafka-python's own defaults wait 30 s
    and more, and a partition that does not exist makes its offset lookups wait for ever): a topic
    or partition that is gone answers `TopicGone` (410) at once, a broker that does not answer
    `MediaUnavailable` (503). A consumer that met either is closed rather than pooled, so it stops
    asking the broker about a topic nobody reads."""

    def __init__(self, config: VigilConfig, pool_size: int | None = None, timeout_s: float | None = None) -> None:
        self.config = config
        self.timeout_s = config.web.media_timeout_s if timeout_s is None else timeout_s
        self._pool: queue.Queue[Any] = queue.Queue()
        self._created = 0
        self._pool_size = config.web.media_workers if pool_size is None else pool_size
        self._lock = threading.Lock()

    def unavailable(self, doing: str) -> MediaUnavailable:
        servers = ",".join(self.config.kafka.bootstrap())
        return MediaUnavailable(
            f"Kafka ({servers}) did not answer within {self.timeout_s:g} s (web.media_timeout_s) while {doing}; "
            "try again shortly",
            retry_after_s=max(1.0, self.timeout_s),
        )

    def _create(self) -> Any:
        try:
            return make_consumer(
                self.config.kafka, "web-media", None, max_partition_fetch_bytes=2 * 1024 * 1024,
                bootstrap_timeout_ms=int(self.timeout_s * 1000), allow_auto_create_topics=False,
            )  # fmt: skip
        except (KafkaError, VigilError):
            with self._lock:
                self._created -= 1
            raise self.unavailable("connecting a frame reader") from None

    def _take(self) -> Any:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            create = self._created < self._pool_size
            self._created += create
        if create:
            return self._create()
        try:
            return self._pool.get(timeout=self.timeout_s)
        except queue.Empty:
            raise MediaUnavailable(
                f"all {self._pool_size} frame readers are busy (web.media_workers); try again shortly", 2.0
            ) from None

    @contextmanager
    def consumer(self) -> Iterator[Any]:
        consumer = self._take()
        keep = True
        try:
            yield consumer
        except (TopicGone, MediaUnavailable, KafkaError):
            keep = False
            raise
        finally:
            if keep:
                consumer.assign([])
                self._pool.put(consumer)
            else:
                with self._lock:
                    self._created -= 1
                consumer.close(autocommit=False)

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

    def _partitions(self, consumer: Any, topic: str) -> set[int] | None:
        """The topic's partitions from a metadata answer requested now (None: no such topic), within
        the timeout. Two rounds: an answer to a request sent before `assign` may not name the topic."""
        cluster = consumer._cluster  # kafka-python's metadata cache, as vigil.kafka.subscribe reads it
        deadline = time.monotonic() + self.timeout_s
        for _ in range(2):
            future = cluster.request_update()
            while not future.is_done:
                if time.monotonic() > deadline:
                    raise self.unavailable(f"reading the metadata of {topic}")
                time.sleep(0.01)
            if future.failed():
                if isinstance(future.exception, UnknownTopicOrPartitionError):
                    return None
                raise MediaUnavailable(
                    f"Kafka could not give the metadata of {topic} ({future.exception}); try again shortly", 2.0
                )
            found: set[int] | None = cluster.partitions_for_topic(topic)
            if found:
                return found
        return None

    def _open(self, consumer: Any, tp: TopicPartition, what: str) -> tuple[int, int]:
        """Assign `tp` and return its (first, end) offsets; TopicGone if it does not exist."""
        consumer.assign([tp])
        partitions = self._partitions(consumer, tp.topic)
        if partitions is None or tp.partition not in partitions:
            where = f"topic {tp.topic}" if partitions is None else f"partition {tp.partition} of topic {tp.topic}"
            raise TopicGone(
                f"the frames of {what} were on {where}, which does not exist any more (deleted, or "
                "topics.frames.name changed); its snapshot and clip are gone"
            )
        timeout_ms = int(self.timeout_s * 1000)
        try:
            first = consumer.beginning_offsets([tp], timeout_ms=timeout_ms)[tp]
            end = consumer.end_offsets([tp], timeout_ms=timeout_ms)[tp]
        except KafkaTimeoutError:
            raise self.unavailable(f"reading the offsets of {tp.topic}/{tp.partition}") from None
        return first, end

    def retained(self, ref: FrameRef, what: str) -> None:
        """Raise MediaGone / TopicGone unless the frame `ref` is still on its topic."""
        with self.consumer() as consumer:
            first, _ = self._open(consumer, TopicPartition(ref.topic, ref.partition), what)
        if ref.offset < first:
            raise self.gone(what)

    def frame(self, ref: FrameRef, what: str) -> tuple[FrameMeta, bytes]:
        tp = TopicPartition(ref.topic, ref.partition)
        with self.consumer() as consumer:
            start, end = self._open(consumer, tp, what)
            if ref.offset < start:
                raise self.gone(what)
            if ref.offset >= end:
                raise MediaNotFound(f"frame {ref.topic}/{ref.partition}/{ref.offset} of {what} is not on the topic")
            consumer.seek(tp, ref.offset)
            deadline = time.monotonic() + self.timeout_s
            while time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200, max_records=1).values():
                    for record in records:
                        if record.offset != ref.offset:
                            raise self.gone(what)  # compacted or deleted under us
                        return FrameMeta.from_headers(record.headers), bytes(record.value or b"")
            raise self.unavailable(f"reading frame {ref.topic}/{ref.partition}/{ref.offset}")

    def frames(
        self, camera_id: str, start_ns: int, end_ns: int, what: str, topic: str, partition: int
    ) -> Generator[tuple[FrameMeta, bytes], None, None]:
        """The camera's frames with start_ns <= capture_ns <= end_ns, in order, one at a time."""
        tp = TopicPartition(topic, partition)
        with self.consumer() as consumer:
            first, end = self._open(consumer, tp, what)
            try:
                found = consumer.offsets_for_times(
                    {tp: max(0, start_ns // 1_000_000 - SLACK_MS)}, timeout_ms=int(self.timeout_s * 1000)
                )[tp]
            except KafkaTimeoutError:
                raise self.unavailable(f"finding the clip's start on {topic}/{partition}") from None
            if found is None:
                return
            position = max(first, found.offset)
            consumer.seek(tp, position)
            # Bounded by the end offset read above; a broker that stops answering midway is a 503.
            quiet_until = time.monotonic() + self.timeout_s
            while position < end:
                batch = consumer.poll(timeout_ms=200)
                if not batch:
                    if time.monotonic() > quiet_until:
                        raise self.unavailable(f"reading the clip's frames from {topic}/{partition}")
                    continue
                quiet_until = time.monotonic() + self.timeout_s
                for records in batch.values():
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


def _fit(image: Any, size: tuple[int, int]) -> Any:
    """`image` at the clip's `size`: an odd side loses its last row or column (exact, and free), a frame of
    another size (the camera changed resolution mid-clip) is resized."""
    width, height = size
    if width <= image.shape[1] <= width + 1 and height <= image.shape[0] <= height + 1:
        return image[:height, :width]
    return resize_down(image, width, height)


def encode_clip(path: Path, frames: Iterator[tuple[FrameMeta, bytes]], max_pixels: int, fps_hint: float) -> ClipStats:
    """Stream frames into an H.264 MP4 at `path` (faststart, so a browser plays it while loading)."""
    import av
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
                image = np.ascontiguousarray(_fit(image, size))
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
