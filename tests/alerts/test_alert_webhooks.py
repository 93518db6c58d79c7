"""Webhook delivery: Standard Webhooks signatures, retries, dead letters, durability (real broker,
real HTTP receiver on loopback)."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alerts_helpers import alert
from alerts_receiver import Receiver
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaConnectionError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.cli import new_secret
from alerts.http_post import Attempt, post
from alerts.webhooks import DeliveryPolicy, EndpointDeliverer, Signer, parse_retry_after
from vigil.config import AlertsConfig, VigilConfig, WebhookConfig
from vigil.contracts import DeadLetter
from vigil.errors import VigilError
from vigil.health import Health
from vigil.kafka import ensure_topics

# ---------------------------------------------------------------------------------------------- pure


def test_new_secret_format() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and secret != new_secret()
    WebhookConfig(name="x", url="http://h/", secrets=[secret])  # accepted by the config validator


def test_signature_verifies_tampering_and_stale_timestamp_fail() -> None:
    old, new = new_secret(), new_secret()
    body = alert(1).to_bytes().decode()
    headers = Signer([new, old]).headers("al_0001.started", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):  # during rotation a receiver with either secret verifies
        assert Webhook(secret).verify(body, headers)["id"] == "al_0001"
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(body.replace("0.9", "0.1"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    stale = Signer([new]).headers("al_0001.started", body, timestamp=int(time.time()) - 3600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(new).verify(body, stale)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("3", 3.0), ("0", 0.0), (None, None), ("soon", None), ("  7 ", 7.0)],
)
def test_parse_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value) == expected


def test_parse_retry_after_http_date() -> None:
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1.01)


@pytest.mark.parametrize(
    ("status", "retry"), [(None, True), (500, True), (503, True), (408, True), (429, True), (400, False), (404, False)]
)
def test_retryable(status: int | None, retry: bool) -> None:
    assert DeliveryPolicy.retryable(Attempt(status)) is retry


def test_backoff_grows_capped_with_jitter() -> None:
    policy = DeliveryPolicy(initial_backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(1)
    delays = [policy.delay(n, Attempt(None), rng) for n in range(1, 10)]
    assert all(0.05 <= d <= 0.1 for d in delays[:1]) and all(0.5 <= d <= 1.0 for d in delays[5:])
    assert len({round(d, 6) for d in delays[5:]}) > 1  # jittered
    assert policy.delay(1, Attempt(429, retry_after="2"), rng) == 2.0


# ---------------------------------------------------------------------------------------------- broker


def fast_group(config: VigilConfig) -> VigilConfig:
    """Group timing short enough to be kicked out of the group by a 3 s stall (max_poll_interval)."""
    consumer = config.kafka.consumer.model_copy(
        update={"session_timeout_ms": 6000, "heartbeat_interval_ms": 300, "max_poll_interval_ms": 1500}
    )
    return config.model_copy(update={"kafka": config.kafka.model_copy(update={"consumer": consumer})})


def hook_config(base: VigilConfig, receiver: Receiver, **hook: object) -> VigilConfig:
    fields: dict[str, object] = {
        "name": "rx",
        "url": receiver.url,
        "secrets": [receiver.secret],
        "timeout_s": 2.0,
        "initial_backoff_s": 0.05,
        "max_backoff_s": 0.5,
    }
    fields.update(hook)
    alerts = AlertsConfig(group_id=base.alerts.group_id, webhooks=[WebhookConfig.model_validate(fields)])
    return base.model_copy(update={"alerts": alerts})


def publish(config: VigilConfig, records: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
    for value in records:
        producer.send(config.topics.alerts.name, key=b"cam1", value=value)
    producer.flush()
    producer.close()


@contextmanager
def deliverer(config: VigilConfig, health: Health | None = None) -> Iterator[EndpointDeliverer]:
    stop = threading.Event()
    worker = EndpointDeliverer(config, config.alerts.webhooks[0], stop, health=health)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=20)
        assert not thread.is_alive()


def committed(config: VigilConfig) -> int | None:
    consumer = KafkaConsumer(
        bootstrap_servers=config.kafka.bootstrap_servers, group_id=f"{config.alerts.group_id}.webhook.rx"
    )
    try:
        value: int | None = consumer.committed(TopicPartition(config.topics.alerts.name, 0))
        return value
    finally:
        consumer.close()


def dead_letters(config: VigilConfig, count: int, timeout_s: float = 15) -> list[DeadLetter]:
    consumer = KafkaConsumer(
        config.topics.dead_letter.name,
        bootstrap_servers=config.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    letters = []
    for record in consumer:
        letters.append(DeadLetter.from_record(record))
        if len(letters) >= count:
            break
    consumer.close()
    return letters


@pytest.mark.broker
def test_500_three_times_then_200_delivered_once(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.start()
    config = hook_config(vigil_config, alerts_receiver)
    ensure_topics(config.kafka, config.topics)
    alerts_receiver.responses.extend([(500, {}, b"boom")] * 3)
    publish(config, [alert(1).to_bytes(), alert(2).to_bytes()])
    with deliverer(config) as worker:
        acked = alerts_receiver.wait_for(2, 30)
        deadline = time.monotonic() + 10
        while committed(config) != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
    assert acked == ["al_0001.started", "al_0002.started"]
    attempts = [d.headers["webhook-id"] for d in alerts_receiver.deliveries]
    assert attempts == ["al_0001.started"] * 4 + ["al_0002.started"]
    assert all(d.verified for d in alerts_receiver.deliveries), [d.error for d in alerts_receiver.deliveries]
    assert worker.delivered == 2 and committed(config) == 2
    # Restart with the same group: nothing acknowledged is sent again.
    with deliverer(config):
        time.sleep(6)
    assert len(alerts_receiver.deliveries) == 5


@pytest.mark.broker
def test_400_dead_letters_with_reason_and_continues(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.start()
    config = hook_config(vigil_config, alerts_receiver)
    ensure_topics(config.kafka, config.topics)
    alerts_receiver.responses.append((400, {}, b'{"error": "unknown camera"}'))
    refused = alert(1).to_bytes()
    publish(config, [refused, b"not json", alert(2).to_bytes()])
    with deliverer(config) as worker:
        acked = alerts_receiver.wait_for(1, 30)
        letters = dead_letters(config, 2)
    assert acked == ["al_0002.started"]
    assert worker.dead_lettered == 2
    reasons = sorted(letter.reason for letter in letters)
    assert "HTTP 400" in reasons[0] and "unknown camera" in reasons[0] and "al_0001.started" in reasons[0]
    assert reasons[1].startswith("malformed alert record")
    assert {letter.value for letter in letters} == {refused, b"not json"}
    assert all(letter.stage == "alerts.webhook.rx" for letter in letters)


@pytest.mark.broker
def test_429_retry_after_is_honoured(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.start()
    config = hook_config(vigil_config, alerts_receiver)
    ensure_topics(config.kafka, config.topics)
    alerts_receiver.responses.append((429, {"Retry-After": "2"}, b"slow down"))
    publish(config, [alert(1).to_bytes()])
    with deliverer(config):
        acked = alerts_receiver.wait_for(1, 30)
    assert acked == ["al_0001.started"]
    first, second = alerts_receiver.deliveries[:2]
    assert second.at - first.at >= 1.95  # max_backoff_s is 0.5: only Retry-After explains the wait


@pytest.mark.broker
@pytest.mark.timeout(180)
def test_receiver_down_30s_then_up_every_alert_once(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.reserve_port()  # nothing listens yet: connection refused
    config = hook_config(vigil_config, alerts_receiver, max_backoff_s=2.0)
    ensure_topics(config.kafka, config.topics)
    events = [alert(n, e).to_bytes() for n in range(5) for e in ("started", "ended")]
    publish(config, events)
    with deliverer(config) as worker:
        time.sleep(30)
        assert worker.delivered == 0
        alerts_receiver.start()
        acked = alerts_receiver.wait_for(len(events), 30)
        time.sleep(1)
    expected = [f"al_{n:04d}.{e}" for n in range(5) for e in ("started", "ended")]
    assert alerts_receiver.acked_ids() == acked == expected  # in order, none twice
    assert all(d.verified for d in alerts_receiver.deliveries)


@pytest.mark.broker
def test_duplicate_event_in_topic_delivered_once(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.start()
    config = hook_config(vigil_config, alerts_receiver, events=["started"])
    ensure_topics(config.kafka, config.topics)
    publish(config, [alert(1).to_bytes(), alert(1).to_bytes(), alert(1, "ended").to_bytes(), alert(2).to_bytes()])
    with deliverer(config):
        acked = alerts_receiver.wait_for(2, 30)
        time.sleep(1)
    assert alerts_receiver.acked_ids() == acked == ["al_0001.started", "al_0002.started"]


# ---------------------------------------------------------------------------------------------- redirects


def test_post_does_not_follow_a_redirect(alerts_receiver: Receiver) -> None:
    """urllib would follow a POST's 302 with a GET without body and report the GET's 200."""
    alerts_receiver.path = "/services/T000/B000/PathToken123"
    alerts_receiver.start()
    port = alerts_receiver.port
    alerts_receiver.responses.append((302, {"Location": "/moved/NewToken456"}, b""))
    attempt = post(alerts_receiver.url, alert(1).to_bytes(), {}, 5.0)
    assert attempt.status == 302 and not attempt.ok and not DeliveryPolicy.retryable(attempt)
    assert alerts_receiver.gets == []
    assert attempt.describe() == f"HTTP 302: endpoint redirected to http://127.0.0.1:{port}; configure the final URL"


@pytest.mark.broker
def test_redirect_is_dead_lettered_naming_the_fix(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.path = "/services/T000/B000/PathToken123"
    alerts_receiver.start()
    port = alerts_receiver.port
    config = hook_config(vigil_config, alerts_receiver)
    ensure_topics(config.kafka, config.topics)
    # The new location answers GET 200, as a moved endpoint (or a login page) would.
    moved = f"http://127.0.0.1:{port}/services/T000/B000/NewToken456"
    alerts_receiver.responses.append((302, {"Location": moved}, b""))
    redirected = alert(1).to_bytes()
    publish(config, [redirected, alert(2).to_bytes()])
    with deliverer(config) as worker:
        acked = alerts_receiver.wait_for(1, 30)
        letters = dead_letters(config, 1)
    assert acked == ["al_0002.started"]
    assert alerts_receiver.gets == []  # never followed
    assert worker.delivered == 1 and worker.dead_lettered == 1
    assert [letter.value for letter in letters] == [redirected]
    reason = letters[0].reason
    assert f"endpoint redirected to http://127.0.0.1:{port}; configure the final URL" in reason, reason
    assert "al_0001.started" in reason and "Token" not in reason


# ---------------------------------------------------------------------------------------------- rebalances


class Member:
    """Another member of a deliverer's consumer group that holds partitions without consuming them."""

    def __init__(self, config: VigilConfig, group_id: str) -> None:
        self.consumer = KafkaConsumer(
            config.topics.alerts.name,
            bootstrap_servers=config.kafka.bootstrap_servers,
            group_id=group_id,
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=300,
            # A join whose metadata did not yet hold the new topic's partitions is assigned none; a refresh
            # every second (not kafka-python's 5 minutes) sees them and rebalances.
            metadata_max_age_ms=1000,
        )
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.assigned: set[int] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.consumer.pause(*self.consumer.assignment())
            self.consumer.poll(timeout_ms=100)
            with self.lock:
                self.assigned = {tp.partition for tp in self.consumer.assignment()}

    def wait_for(self, count: int, timeout_s: float) -> set[int]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.assigned) == count:
                    return set(self.assigned)
            time.sleep(0.05)
        raise AssertionError(f"the other member never held {count} partition(s), it holds {self.assigned}")

    def leave(self) -> None:
        if self.stop.is_set():
            return
        self.stop.set()
        self.thread.join(timeout=10)
        self.consumer.close(autocommit=False)


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_rebalance_during_backoff_loses_no_record(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    """A rebalance inside the backoff poll assigns a new partition, unpaused: the records that poll
    returns must be fetched again later, not dropped (their offsets would be skipped)."""
    alerts_receiver.start()
    topics = vigil_config.topics.model_copy(
        update={"alerts": vigil_config.topics.alerts.model_copy(update={"partitions": 2})}
    )
    config = hook_config(vigil_config.model_copy(update={"topics": topics}), alerts_receiver, max_backoff_s=0.3)
    ensure_topics(config.kafka, config.topics)
    group_id = f"{config.alerts.group_id}.webhook.rx"
    other = Member(config, group_id)
    try:
        other.wait_for(2, 30)
        alerts_receiver.responses.extend([(503, {}, b"down")] * 100_000)
        with deliverer(config) as worker:
            (theirs,) = other.wait_for(1, 30)
            ours = 1 - theirs
            producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
            producer.send(config.topics.alerts.name, alert(1).to_bytes(), partition=ours).get(timeout=10)
            deadline = time.monotonic() + 30
            while len(alerts_receiver.deliveries) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert len(alerts_receiver.deliveries) >= 2  # retrying: every poll now happens inside the backoff
            for n in (2, 3):
                producer.send(config.topics.alerts.name, alert(n).to_bytes(), partition=theirs).get(timeout=10)
            producer.close()
            other.leave()  # the deliverer takes over the other partition from inside its backoff
            deadline = time.monotonic() + 30
            while len(worker._consumer.assignment()) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.5)  # several backoff polls on the new assignment
            with alerts_receiver._lock:
                alerts_receiver.responses.clear()
            acked = alerts_receiver.wait_for(3, 30)
            time.sleep(0.5)
    finally:
        other.leave()
    assert acked == ["al_0001.started", "al_0002.started", "al_0003.started"]
    assert alerts_receiver.acked_ids() == acked  # none twice


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_commit_refused_after_rebalance_is_not_fatal(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    """A receiver slower than max_poll_interval gets the deliverer kicked out of its group, so the
    commit after the 2xx is refused: the thread must carry on (the record is redelivered and skipped)."""
    alerts_receiver.start()
    config = hook_config(fast_group(vigil_config), alerts_receiver, timeout_s=10.0)
    ensure_topics(config.kafka, config.topics)
    alerts_receiver.delays.append(3.0)
    publish(config, [alert(1).to_bytes(), alert(2).to_bytes()])
    health = Health()
    with deliverer(config, health) as worker:
        acked = alerts_receiver.wait_for(2, 60)
        deadline = time.monotonic() + 20
        while committed(config) != 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        status = {c.name: c for c in health.ready().components}["webhook:rx"]
        assert status.ok, status.detail
    assert acked == ["al_0001.started", "al_0002.started"]
    assert worker.delivered == 2 and committed(config) == 2


@pytest.mark.broker
def test_deliverer_health_follows_its_thread(vigil_config: VigilConfig, alerts_receiver: Receiver) -> None:
    alerts_receiver.start()
    config = hook_config(vigil_config, alerts_receiver)
    ensure_topics(config.kafka, config.topics)
    health = Health()

    def webhook_status() -> tuple[bool, str] | None:
        found = [c for c in health.ready().components if c.name == "webhook:rx"]
        return (found[0].ok, found[0].detail) if found else None

    with deliverer(config, health):
        deadline = time.monotonic() + 15
        while webhook_status() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert webhook_status() == (True, f"delivering to http://127.0.0.1:{alerts_receiver.port}")
        assert health.ready().ready
    assert webhook_status() == (False, "stopped")
    assert not health.ready().ready

    # A deliverer whose consumer never comes up (no broker there) reports itself not ready.
    down = config.model_copy(
        update={
            "kafka": config.kafka.model_copy(
                update={"bootstrap_servers": ["127.0.0.1:9"], "bootstrap_timeout_ms": 1000}
            )
        }
    )
    worker = EndpointDeliverer(down, down.alerts.webhooks[0], threading.Event(), health=health)
    with pytest.raises(VigilError):
        worker.run()
    status = webhook_status()
    assert status is not None and status[0] is False and "exited" in status[1]


class _CommitFailsOnce(EndpointDeliverer):
    """A deliverer whose first commit is refused as during a broker outage (the broker itself is up, so
    the rest of the run is real)."""

    refused = 0

    def _send_commit(self, consumer: Any, offsets: dict[Any, Any], done: Callable[..., None]) -> None:
        if not self.refused:
            self.refused += 1
            done(offsets, KafkaConnectionError("refused as during an outage"))
            return
        super()._send_commit(consumer, offsets, done)


@pytest.mark.broker
def test_a_refused_commit_does_not_skip_the_rest_of_the_batch(
    vigil_config: VigilConfig, alerts_receiver: Receiver
) -> None:
    """Every record of a batch whose commit was refused is delivered, and the refused commit is sent again
    though no record follows: nothing skipped, nothing left uncommitted."""
    alerts_receiver.start()
    config = hook_config(vigil_config, alerts_receiver)
    ensure_topics(config.kafka, config.topics)
    publish(config, [alert(n).to_bytes() for n in (1, 2, 3)])  # one poll's batch
    stop = threading.Event()
    worker = _CommitFailsOnce(config, config.alerts.webhooks[0], stop)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        acked = alerts_receiver.wait_for(3, 30)
        deadline = time.monotonic() + 20
        while committed(config) != 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join(timeout=20)
    assert worker.refused == 1
    assert acked == ["al_0001.started", "al_0002.started", "al_0003.started"]
    assert worker.delivered == 3 and committed(config) == 3
