"""Standard Webhooks 1.0 delivery: signing, retry policy, and one durable deliverer per endpoint.

Each endpoint is its own consumer group on the alerts topic. A record's offset is committed only
after the endpoint answered 2xx (or the record was dead-lettered), so a crash resends exactly what
was not acknowledged, with the same `webhook-id`. One thread per endpoint: a slow or dead receiver
delays nobody but itself, and the aggregator never waits on HTTP.

Each deliverer posts over one kept-alive connection (`alerts.http_post`). Redirects are not
followed (see there): a 3xx is dead-lettered with the Location to configure instead. Endpoint URLs
often carry their token in the path (Slack, Teams): logs, errors and dead-letter reasons show only
scheme://host[:port].
"""

from __future__ import annotations

import email.utils
import logging
import queue
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka.structs import OffsetAndMetadata
from standardwebhooks.webhooks import Webhook

from alerts import metrics
from alerts.http_post import Attempt, KeptConnection
from vigil.config import VigilConfig, WebhookConfig
from vigil.contracts import AlertRecord, KafkaRecord
from vigil.errors import ContractError
from vigil.health import Health
from vigil.kafka import DeadLetterPublisher, KafkaError, Outage, make_consumer, make_producer, transient
from vigil.logs import log_repeated
from vigil.redact import redact_endpoint
from vigil.signing import with_media_links

log = logging.getLogger(__name__)
RETRYABLE_STATUS = frozenset({408, 429})
SEEN_IDS = 50_000


class Signer:
    """Signs with every configured secret (two during rotation), using the `standardwebhooks`
    reference implementation so any Standard Webhooks library verifies the result."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ContractError("a webhook endpoint needs at least one whsec_ secret")
        self._hooks = [Webhook(secret) for secret in secrets]

    def headers(self, msg_id: str, body: str, timestamp: int | None = None) -> dict[str, str]:
        ts = int(time.time()) if timestamp is None else timestamp
        when = datetime.fromtimestamp(ts, tz=UTC)
        signature = " ".join(hook.sign(msg_id, when, body) for hook in self._hooks)
        return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class DeliveryPolicy:
    """Which outcomes are retried, and after how long: capped exponential backoff with full jitter
    (so endpoints recovering from an outage are not hit by every sender at once)."""

    initial_backoff_s: float = 0.5
    max_backoff_s: float = 60.0
    give_up_after_s: float | None = None
    max_retry_after_s: float = 3600.0

    @classmethod
    def of(cls, hook: WebhookConfig) -> DeliveryPolicy:
        return cls(hook.initial_backoff_s, hook.max_backoff_s, hook.give_up_after_s)

    @staticmethod
    def retryable(attempt: Attempt) -> bool:
        status = attempt.status
        return status is None or status >= 500 or status in RETRYABLE_STATUS

    def delay(self, failures: int, attempt: Attempt, rng: random.Random | None = None) -> float:
        """Seconds before the next try after `failures` consecutive failures (1-based)."""
        if attempt.status in RETRYABLE_STATUS:
            honoured = parse_retry_after(attempt.retry_after)
            if honoured is not None:
                return min(honoured, self.max_retry_after_s)
        cap = min(self.max_backoff_s, self.initial_backoff_s * float(2 ** min(failures - 1, 30)))
        jitter: float = (rng or random).uniform(0, cap / 2)
        return cap / 2 + jitter


class EndpointDeliverer:
    """Consumes the alerts topic in the endpoint's own group and POSTs each wanted event until it
    is acknowledged (2xx) or refused (other 4xx, dead-lettered with the response)."""

    def __init__(
        self,
        config: VigilConfig,
        hook: WebhookConfig,
        stop: threading.Event,
        sender: Callable[[str, bytes, dict[str, str], float], Attempt] | None = None,
        health: Health | None = None,
    ) -> None:
        self.config = config
        self.hook = hook
        self.name = hook.name
        self.group_id = f"{config.alerts.group_id}.webhook.{hook.name}"
        self.policy = DeliveryPolicy.of(hook)
        self.stop = stop
        self._url = hook.url.get_secret_value()
        # Default: one kept-alive connection to the endpoint, closed when the delivery loop ends.
        self._kept: KeptConnection | None = None
        if sender is None:
            sender = self._kept = KeptConnection(self._url)
        self._send = sender
        self.endpoint = redact_endpoint(self._url)  # what logs and errors may show of the URL
        self.health = health
        self.health_name = f"webhook:{hook.name}"
        self._signer = Signer([s.get_secret_value() for s in hook.secrets])
        self._delivered: OrderedDict[str, None] = OrderedDict()
        self._consumer: Any = None
        # Next offset to commit per partition, settled since the last commit; and the offsets of commits
        # that failed (put by kafka-python's IO thread), merged back before the next one.
        self._settled: dict[Any, int] = {}
        self._refused: queue.SimpleQueue[dict[Any, int]] = queue.SimpleQueue()
        self.delivered = 0
        self.dead_lettered = 0

    def wants(self, alert: AlertRecord) -> bool:
        return (not self.hook.rules or alert.rule in self.hook.rules) and alert.event in self.hook.events

    # ---------------------------------------------------------------------------------- loop

    def run(self) -> None:
        """Deliver until `stop` is set. Kafka being down is retried: durability lives in Kafka.
        The endpoint is ready (health) only while this runs with its consumer up."""
        detail = "delivery thread exited unexpectedly; see the log"
        try:
            self._run()
            detail = "stopped"
        except KafkaError as exc:
            detail = f"delivery thread stopped: {type(exc).__name__}: {exc}"
            raise
        finally:
            self._set_health(False, detail)

    def _set_health(self, ok: bool, detail: str) -> None:
        if self.health is not None:
            self.health.set(self.health_name, ok, detail)

    def _run(self) -> None:
        log.info("webhook %s: delivering to %s as group %s", self.name, self.endpoint, self.group_id)
        consumer = make_consumer(
            self.config.kafka, f"webhook-{self.name}", self.group_id, [self.config.topics.alerts.name]
        )
        self._consumer = consumer
        producer: Any = None
        try:
            producer = make_producer(self.config.kafka, f"webhook-{self.name}-dlq")
            dead = DeadLetterPublisher(producer, self.config.topics.dead_letter.name, f"alerts.webhook.{self.name}")
            self._set_health(True, f"delivering to {self.endpoint}")
            outage = Outage(log, f"webhook {self.name}")
            while not self.stop.is_set():
                self._commit_settled(consumer)
                try:
                    batch = consumer.poll(timeout_ms=500)
                except KafkaError as exc:
                    if not transient(exc):
                        raise
                    outage.failed(exc, "polling again")  # nothing returned, nothing lost
                    self.stop.wait(0.5)
                    continue
                outage.recovered()
                for tp, records in batch.items():
                    for record in records:
                        if self.stop.is_set() or tp not in consumer.assignment():
                            break  # not committed: redelivered after restart or to the new owner
                        if not self.handle(record, dead):
                            consumer.seek(tp, record.offset)  # unsettled: poll it again
                            break
                        if tp not in consumer.assignment():
                            break  # revoked while retrying: the new owner redelivers (same webhook-id)
                        self._settled[tp] = record.offset + 1
            self._commit_settled(consumer, wait=True)
        finally:
            if self._kept is not None:
                self._kept.close()
            try:
                if producer is not None:
                    producer.flush(timeout=10)
                    producer.close(timeout=5)
            finally:
                consumer.close(autocommit=False)

    def _commit_settled(self, consumer: Any, wait: bool = False) -> None:
        """Commit every record settled since the last commit, in one request that is not waited for.

        A synchronous commit per record cost ~11 ms here (`bench/bench_kafka.py`), and a burst of alerts
        queued behind those commits, not behind HTTP. A commit that fails (an outage, a rebalance) is sent
        again before the next poll unless a later one covered it; until one succeeds a restart redelivers
        those records, with the same webhook-id. Partitions revoked meanwhile are not committed: their new
        owner redelivers. `wait`: at the end, commit synchronously what is still unacknowledged."""
        while not self._refused.empty():
            for tp, offset in self._refused.get().items():
                self._settled[tp] = max(self._settled.get(tp, 0), offset)
        assigned = consumer.assignment()
        offsets = {tp: OffsetAndMetadata(o, "", -1) for tp, o in self._settled.items() if tp in assigned}
        self._settled.clear()
        if not offsets:
            return
        if wait:
            try:
                consumer.commit(offsets, timeout_ms=5000)
            except KafkaError as exc:
                log.warning("webhook %s: final commit failed (%s); those alerts will be redelivered", self.name, exc)
            return

        def done(_offsets: Any, response: Any) -> None:  # on kafka-python's IO thread
            if isinstance(response, Exception):
                log.warning("webhook %s: commit failed (%s); retrying it", self.name, response)
                self._refused.put({tp: meta.offset for tp, meta in offsets.items()})

        self._send_commit(consumer, offsets, done)

    def _send_commit(self, consumer: Any, offsets: dict[Any, OffsetAndMetadata], done: Callable[..., None]) -> None:
        consumer.commit_async(offsets, callback=done)

    def handle(self, record: KafkaRecord, dead: DeadLetterPublisher) -> bool:
        """True when the record is settled (delivered, skipped or dead-lettered) and may be committed."""
        try:
            alert = AlertRecord.from_bytes(record.value)
        except ContractError as exc:
            return self._dead_letter(record, dead, f"malformed alert record: {exc}", "malformed")
        if not self.wants(alert):
            return True
        if alert.webhook_id in self._delivered:
            metrics.DUPLICATES.labels(self.name).inc()
            log.info("webhook %s: %s already delivered, skipped", self.name, alert.webhook_id)
            return True
        # With web.public_url set, the payload carries signed snapshot_url and clip_url (docs/webhooks.md).
        body = with_media_links(record.value or b"", self.config.web, alert.alert_id, alert.first_seen_ns)
        outcome = self.deliver(alert, body)
        if outcome is None:
            return False  # stopping
        if outcome.ok:
            self._remember(alert.webhook_id)
            return True
        verb = "could not deliver" if outcome.redirected else "refused"
        reason = f"endpoint {self.name} ({self.endpoint}) {verb} {alert.webhook_id}: {outcome.describe()}"
        return self._dead_letter(record, dead, reason, "refused")

    def deliver(self, alert: AlertRecord, body: bytes) -> Attempt | None:
        """POST until 2xx, a permanent refusal, give_up_after_s, or stop (None)."""
        text = body.decode("utf-8")
        started = time.monotonic()
        failures = 0
        while not self.stop.is_set():
            # A fresh timestamp each attempt: receivers reject stale ones (replay protection).
            headers = self._signer.headers(alert.webhook_id, text)
            attempt = self._send(self._url, body, headers, self.hook.timeout_s)
            metrics.LATENCY.labels(self.name).observe(attempt.seconds)
            if attempt.ok:
                metrics.ATTEMPTS.labels(self.name, "2xx").inc()
                metrics.DELIVERED.labels(self.name).inc()
                metrics.END_TO_END.labels(self.name).observe(max(0.0, time.time() - alert.last_seen_ns / 1e9))
                self.delivered += 1
                log.debug("webhook %s: delivered %s (%s)", self.name, alert.webhook_id, attempt.status)
                return attempt
            outcome = "error" if attempt.status is None else f"{attempt.status // 100}xx"
            metrics.ATTEMPTS.labels(self.name, outcome).inc()
            if not self.policy.retryable(attempt):
                return attempt
            failures += 1
            metrics.FAILURES.labels(self.name).inc()
            wait = self.policy.delay(failures, attempt)
            give_up = self.policy.give_up_after_s
            if give_up is not None and time.monotonic() - started + wait > give_up:
                return Attempt(
                    attempt.status, attempt.body_head, f"gave up after {failures} attempts: {attempt.describe()}"
                )
            log_repeated(
                log, logging.WARNING, f"webhook_retry:{self.name}", alert.camera_id,
                "webhook %s: %s attempt %d failed (%s); retrying in %.2fs",
                self.name, alert.webhook_id, failures, attempt.describe(), wait,
            )  # fmt: skip
            self._wait(wait)
        return None

    def _wait(self, seconds: float) -> None:
        """Back off while staying in the group: poll with every partition paused, which fetches
        nothing but tells the coordinator this member is alive (max_poll_interval_ms).

        A rebalance inside one of these polls can assign partitions that start unpaused, and the
        same poll may return their records: they are not ours to drop, so the partition is sought
        back to the first one returned (it is fetched again once delivery resumes), and every
        poll pauses the assignment of that moment."""
        deadline = time.monotonic() + seconds
        consumer = self._consumer
        if consumer is None:
            self.stop.wait(seconds)
            return
        self._commit_settled(consumer)  # what was delivered before this record is not held up by its retries
        try:
            while not self.stop.is_set() and (left := deadline - time.monotonic()) > 0:
                consumer.pause(*consumer.assignment())
                batch = consumer.poll(timeout_ms=int(min(left, 0.5) * 1000) + 1)
                for tp, records in batch.items():
                    if records:
                        consumer.seek(tp, records[0].offset)
        finally:
            assigned = consumer.assignment()
            consumer.resume(*[tp for tp in consumer.paused() if tp in assigned])

    def _remember(self, webhook_id: str) -> None:
        self._delivered[webhook_id] = None
        if len(self._delivered) > SEEN_IDS:
            self._delivered.popitem(last=False)

    def _dead_letter(self, record: KafkaRecord, dead: DeadLetterPublisher, reason: str, kind: str) -> bool:
        try:
            dead.publish(record, reason, kind=f"webhook_{kind}").get(timeout=30)
        except KafkaError as exc:
            log.error("webhook %s: dead-letter failed (%s); will retry the record", self.name, exc)
            self.stop.wait(1.0)
            return False
        metrics.DEAD_LETTERS.labels(f"webhook.{self.name}").inc()
        self.dead_lettered += 1
        return True
