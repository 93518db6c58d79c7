"""Webhook delivery: Standard Webhooks signatures, retries, dead letters, durability (real broker,
real HTTP receiver on loopback)."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from alerts_receiver import Receiver
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.cli import new_secret
from alerts.webhooks import Attempt, DeliveryPolicy, EndpointDeliverer, Signer, parse_retry_after
from vigil.config import AlertsConfig, VigilConfig, WebhookConfig
from vigil.contracts import AlertRecord, DeadLetter, FrameRef
from vigil.kafka import ensure_topics


def alert(n: int, event: str = "started") -> AlertRecord:
    return AlertRecord(
        alert_id=f"al_{n:04d}",
        event=event,  # type: ignore[arg-type]
        camera_id="cam1",
        rule="door",
        zone="door",
        class_name="person",
        class_id=0,
        track_id=n,
        confidence=0.9,
        box=(1.0, 2.0, 3.0, 4.0),
        first_seen_ns=time.time_ns(),
        last_seen_ns=time.time_ns(),
        frame=FrameRef("frames", 0, n),
        latency_ms=12.5,
    )


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
def deliverer(config: VigilConfig) -> Iterator[EndpointDeliverer]:
    stop = threading.Event()
    worker = EndpointDeliverer(config, config.alerts.webhooks[0], stop)
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
