"""Prometheus metrics of the detection function (`vigil_detect_*`), registered once per process."""

from __future__ import annotations

from collections.abc import Mapping

from kafka import KafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge, Histogram

FRAMES = Counter("vigil_detect_frames_total", "Frame records consumed from the frames topic")
DETECTED = Counter("vigil_detect_detected_frames_total", "Frames run through the model and published")
STILL_REUSED = Counter(
    "vigil_detect_still_reused_total",
    "Still frames (no motion) published with their camera's last detections instead of running the model",
)
DROPPED_STALE = Counter(
    "vigil_detect_dropped_stale_total", "Frames skipped because they were older than detect.max_age_s"
)
DEAD_LETTER = Counter(
    "vigil_detect_dead_letter_total", "Frames sent to the dead-letter topic, by reason", labelnames=("reason",)
)
BATCH_SIZE = Histogram(
    "vigil_detect_batch_size", "Frames per inference batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
INFERENCE_SECONDS = Histogram(
    "vigil_detect_inference_seconds",
    "Wall time of one batched inference",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
QUEUE_AGE_SECONDS = Histogram(
    "vigil_detect_queue_age_seconds",
    "Age of a frame (capture to start of detection)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CONSUMER_LAG = Gauge(
    "vigil_detect_consumer_lag_records",
    "Frames records of this worker's partitions not yet committed (end offset minus committed offset)",
)


class LagRecorder:
    """Sets CONSUMER_LAG after each commit: over the partitions assigned to this worker, the end offset
    the consumer learnt with its last fetch (no request is made) minus the offset last committed;
    partitions not committed yet, or whose end is not known yet, are left out."""

    def __init__(self) -> None:
        self._committed: dict[TopicPartition, int] = {}

    def record(self, consumer: KafkaConsumer, committed: Mapping[TopicPartition, int]) -> int:
        self._committed.update(committed)
        assigned = consumer.assignment()
        self._committed = {tp: offset for tp, offset in self._committed.items() if tp in assigned}
        lag = 0
        for tp, offset in self._committed.items():
            end = consumer.highwater(tp)
            if end is not None:
                lag += max(0, int(end) - offset)
        CONSUMER_LAG.set(lag)
        return lag
