"""Alert snapshots: fetch the alert's frame from the frames topic by its `FrameRef` and annotate it.

A separate consumer with no group (assign + seek) reads exactly one record, so fetching a frame
never disturbs the aggregator's consumer group or offsets.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
from typing import Any

from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, FrameRef
from vigil.draw import annotate_alert
from vigil.errors import ContractError
from vigil.kafka import KafkaError, make_consumer

log = logging.getLogger(__name__)


class SnapshotFetcher:
    """`fetcher.attach(alert) -> alert` with `snapshot` set to a base64 annotated JPEG when the frame
    is still in the frames topic (retention may have removed it: then the alert goes without)."""

    def __init__(self, config: VigilConfig, timeout_s: float = 5.0) -> None:
        self.config = config
        self.timeout_s = timeout_s
        self._consumer: Any = None

    def fetch(self, ref: FrameRef) -> bytes | None:
        from kafka import TopicPartition

        if self._consumer is None:
            self._consumer = make_consumer(self.config.kafka, "alerts-snapshot", None)
        tp = TopicPartition(ref.topic, ref.partition)
        try:
            self._consumer.assign([tp])
            self._consumer.seek(tp, ref.offset)
            batch = self._consumer.poll(timeout_ms=int(self.timeout_s * 1000), max_records=1)
        except KafkaError as exc:
            log.warning("snapshot: cannot read frame %s/%d/%d: %s", ref.topic, ref.partition, ref.offset, exc)
            return None
        for record in batch.get(tp, []):
            if record.offset == ref.offset and record.value:
                value: bytes = record.value
                return value
        return None

    def attach(self, alert: AlertRecord) -> AlertRecord:
        jpeg = self.fetch(alert.frame)
        annotated: bytes | None = None
        if jpeg:
            try:
                annotated = annotate_alert(jpeg, alert)
            except ContractError as exc:
                log.warning("snapshot: frame %s of alert %s is not usable: %s", alert.frame, alert.alert_id, exc)
        data = base64.b64encode(annotated).decode() if annotated else None
        return dataclasses.replace(alert, snapshot=data, snapshot_kind="base64_jpeg")

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close(autocommit=False)
            self._consumer = None
