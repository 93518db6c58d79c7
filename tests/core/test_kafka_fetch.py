"""kafka-python 3.0's fetch-session race (vigil/kafka_fetch.py), on the real broker: with a busy partition
among idle ones and a tight poll loop (as the detect worker's while a batch infers), no record waits for the
broker's `fetch_max_wait_ms`."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from kafka.admin import NewTopic

from vigil.config import VigilConfig
from vigil.kafka import make_admin, make_consumer, make_producer
from vigil.kafka_fetch import keep_fetch_sessions_whole

# Long enough that a record caught by the race stands out from any scheduling delay on a loaded box.
MAX_WAIT_MS = 3000


def produce_consume_ms(config: VigilConfig, topic: str, count: int = 80) -> np.ndarray:
    """Milliseconds from send to poll for `count` records on one of 4 partitions, 25 a second."""
    admin = make_admin(config.kafka)
    try:
        admin.create_topics([NewTopic(topic, 4, 1)])
    finally:
        admin.close()
    kafka = config.kafka.model_copy(
        update={"consumer": config.kafka.consumer.model_copy(update={"fetch_max_wait_ms": MAX_WAIT_MS})}
    )
    consumer = make_consumer(kafka, "test", f"{topic}-group", [topic])
    producer = make_producer(config.kafka, "test")
    latencies: list[float] = []
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=5)
            now = time.time_ns()
            latencies.extend((now - int(r.value)) / 1e6 for records in polled.values() for r in records)

    thread = threading.Thread(target=consume)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        for _ in range(count):
            producer.send(topic, key=b"cam0", value=str(time.time_ns()).encode())
            time.sleep(0.04)
        producer.flush()
        deadline = time.monotonic() + MAX_WAIT_MS / 1000 + 10
        while len(latencies) < count and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
        consumer.close()
        producer.close()
    assert len(latencies) == count
    return np.asarray(latencies)


@pytest.mark.broker
def test_no_record_waits_for_fetch_max_wait(vigil_config: VigilConfig, unique_name: str) -> None:
    """Without the workaround (make_consumer not calling keep_fetch_sessions_whole) records stalled for the
    whole MAX_WAIT_MS here, one in ten or more."""
    latencies = produce_consume_ms(vigil_config, unique_name)
    print(f"produce -> poll: p50 {np.median(latencies):.1f} ms, max {latencies.max():.1f} ms")
    assert latencies.max() < MAX_WAIT_MS / 3, sorted(latencies)[-5:]


def test_a_fetcher_without_the_expected_internals_is_left_alone(caplog: pytest.LogCaptureFixture) -> None:
    class Bare:
        _fetcher = object()

    assert keep_fetch_sessions_whole(Bare()) is False  # type: ignore[arg-type]
    assert "fetch_max_wait_ms" in caplog.text
