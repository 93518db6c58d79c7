"""Prometheus metrics of the alerts stage (`vigil_alerts_*`). Labels never carry secrets or URLs."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RECORDS = Counter("vigil_alerts_records", "Detections records consumed", ["result"])
ALERTS = Counter("vigil_alerts_fired", "Alert events published to the alerts topic", ["event"])
REMOVED = Counter(
    "vigil_alerts_boxes_removed",
    "Detections dropped before tracking by an object filter (reason: min_area, ...) or mask (reason: mask:<name>)",
    ["camera", "reason"],
)
RATE_LIMITED = Counter("vigil_alerts_rate_limited", "Alerts not started because of the per-camera rate limit")
OPEN_CAMERAS = Gauge(
    "vigil_alerts_cameras_with_open_alerts",
    "Cameras with an alert started and not yet ended; `vigil up --exit-when-done` waits for 0",
)
OPEN_TRACKS = Gauge("vigil_alerts_confirmed_tracks", "Confirmed tracks across the cameras of this aggregator")
ATTEMPTS = Counter("vigil_alerts_webhook_attempts", "Webhook HTTP attempts", ["endpoint", "outcome"])
DELIVERED = Counter("vigil_alerts_webhook_delivered", "Webhook deliveries acknowledged with 2xx", ["endpoint"])
DUPLICATES = Counter("vigil_alerts_webhook_duplicates", "Alert events skipped as already delivered", ["endpoint"])
FAILURES = Counter("vigil_alerts_webhook_failures", "Failed webhook attempts (will be retried)", ["endpoint"])
DEAD_LETTERS = Counter("vigil_alerts_dead_letters", "Records sent to the dead-letter topic", ["source"])
LATENCY = Histogram(
    "vigil_alerts_webhook_latency_seconds",
    "Duration of one webhook HTTP attempt",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
END_TO_END = Histogram(
    "vigil_alerts_delivery_delay_seconds",
    "From the frame's capture to the receiver's 2xx",
    ["endpoint"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300),
)
