"""Sends that are kept until Kafka acknowledges them, re-sent when they expire.

A stage that commits its input only after its output is acknowledged (at least once) must not
give up when an outage outlasts the producer's `delivery_timeout_ms`: exiting would only make its
supervisor restart it into the same outage. `Deliveries` stands in for the producer's `send`
(so a `DeadLetterPublisher` can publish through it), remembers each record until it is
acknowledged, and `settle` waits for all of them, sending again whatever failed with a transient
error (expired, no leader, not enough replicas), for as long as it takes. It returns False only
when `stop` is set while Kafka is away: then nothing may be committed, and the records are
processed again after the restart, never lost.

A re-sent record lands after the records of its partition that were acknowledged meanwhile; for
vigil's topics that reorders or repeats at most the records of one outage, which consumers handle
as duplicates (same frame ref, same webhook id).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from kafka.errors import KafkaError, KafkaTimeoutError
from kafka.future import Future

from vigil.errors import VigilError
from vigil.kafka import Outage, transient

log = logging.getLogger(__name__)
# How often `settle` re-checks `stop` while it waits for acknowledgements.
_SLICE_S = 1.0


class DeliveryFailedError(VigilError):
    """Kafka refused a record for good (too large, not authorised): re-sending cannot help."""


@dataclass
class _Send:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] | None
    future: Any


class Deliveries:
    """The records sent since the last `settle`, until each is acknowledged."""

    def __init__(self, producer: Any, what: str, logger: logging.Logger = log) -> None:
        self.producer = producer
        self.outage = Outage(logger, what)
        self.resent = 0  # records sent again after a transient failure, over the lifetime
        self._pending: list[_Send] = []

    def send(
        self, topic: str, *, key: bytes | None = None, value: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:  # fmt: skip
        """`KafkaProducer.send`, remembered until `settle` sees it acknowledged."""
        item = _Send(topic, key, value, headers, None)
        item.future = self._send(item)
        self._pending.append(item)
        return item.future

    def _send(self, item: _Send) -> Any:
        """The producer's send future; a send the producer refused to take for now (no metadata,
        its buffer full past `max_block_ms`) as a future failed with that error, to be sent again."""
        try:
            return self.producer.send(item.topic, key=item.key, value=item.value, headers=item.headers)
        except KafkaError as exc:
            if not transient(exc):
                raise DeliveryFailedError(
                    f"Kafka refused a record for {item.topic}: {type(exc).__name__}: {exc}"
                ) from exc
            return Future().failure(exc)

    def __len__(self) -> int:
        return len(self._pending)

    def settle(self, stop: threading.Event) -> bool:
        """True once every record sent since the last settle is acknowledged (the caller may
        commit). False when `stop` is set and Kafka does not acknowledge within a second (the
        caller must not commit; its next start redoes the work). Raises `DeliveryFailedError` for
        a permanent refusal."""
        while True:
            try:
                self.producer.flush(timeout=_SLICE_S)
                slow = False
            except KafkaTimeoutError:
                slow = True  # not acknowledged yet; the sends have not expired yet either
            failed = [item for item in self._pending if item.future.is_done and item.future.failed()]
            if not failed and all(item.future.is_done for item in self._pending):
                self._pending = []
                self.outage.recovered()
                return True
            if failed and not self._resend(failed):
                stop.wait(_SLICE_S)  # the producer would not take them yet
            if stop.is_set() and (slow or self.outage.since is not None):
                return False

    def _resend(self, failed: list[_Send]) -> bool:
        """Send `failed` again; False if the producer refused to take one for now."""
        for item in failed:
            exc = item.future.exception
            if not transient(exc):
                self._pending = []
                raise DeliveryFailedError(f"Kafka refused a record for {item.topic}: {type(exc).__name__}: {exc}")
            self.outage.failed(exc, "sending again until Kafka acknowledges (nothing is committed meanwhile)")
        for item in failed:
            item.future = self._send(item)
            self.resent += 1
            if item.future.is_done and item.future.failed():
                return False  # the producer would not take it yet: the next round tries again
        return True
