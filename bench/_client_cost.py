"""bench_kafka's client-overhead part: what kafka-python's client metrics and the standard selector's lookups cost
per record (vigil/kafka_io.py), on a paced producer and a consumer in this process, vigil's settings otherwise.

Besides the process's CPU per record (noisy on a shared box), it times the two costs themselves: the thread CPU
inside every `Sensor.record` and every selector `get_key`, which does not depend on what else the box runs."""

from __future__ import annotations

import os
import selectors
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from kafka.metrics.stats.sensor import Sensor

from vigil.config import KafkaConfig, TopicConfig
from vigil.kafka import ensure_topics, make_consumer, make_producer
from vigil.kafka_io import QuietSelector

RATE = 100.0  # records a second: one record per produce request, as a camera's frames go
SECONDS = 6.0
VARIANTS: dict[str, dict[str, Any]] = {
    "kafka-python's": {"metrics_enabled": True, "selector": selectors.DefaultSelector},
    "vigil's": {},  # make_producer / make_consumer as the stages get them
}


class _Meter:
    """Thread CPU seconds and calls spent inside the wrapped functions, by name."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cpu_s: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.cpu_s, self.calls = {}, {}

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                with self.lock:
                    self.cpu_s[name] = self.cpu_s.get(name, 0.0) + spent
                    self.calls[name] = self.calls.get(name, 0) + 1

        return timed


@contextmanager
def _metered(meter: _Meter) -> Iterator[None]:
    """Every `Sensor.record` and selector `get_key` (the standard one and vigil's) timed into `meter`."""
    patched = [(Sensor, "record", "sensors"), (selectors.BaseSelector, "get_key", "get_key"),
               (QuietSelector, "get_key", "get_key")]  # fmt: skip
    originals = [(owner, name, owner.__dict__[name]) for owner, name, _ in patched]
    for (owner, name, label), (_, _, original) in zip(patched, originals, strict=True):
        setattr(owner, name, meter.wrap(label, original))
    try:
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def _round(
    config: KafkaConfig, options: dict[str, Any], size: int, meter: _Meter, topics: list[str]
) -> dict[str, float]:
    topic = f"bench-client-{uuid.uuid4().hex[:8]}"
    topics.append(topic)
    ensure_topics(config, [TopicConfig(name=topic, partitions=3)])
    producer = make_producer(config, "bench", **options)
    consumer = make_consumer(config, "bench", f"{topic}-group", [topic], **options)
    payload = os.urandom(size)
    count = int(RATE * SECONDS)
    received = 0
    sent_all = threading.Event()

    def poll() -> None:
        nonlocal received
        deadline = time.monotonic() + SECONDS + 60
        while (not sent_all.is_set() or received < count) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=20).values():
                received += len(records)

    try:
        while not consumer.assignment():
            consumer.poll(timeout_ms=100)
        poller = threading.Thread(target=poll, name="bench-client-poll")
        meter.reset()
        cpu, started = time.process_time(), time.monotonic()
        poller.start()
        for seq in range(count):
            time.sleep(max(0.0, started + seq / RATE - time.monotonic()))
            producer.send(topic, key=f"cam{seq % 3}".encode(), value=payload)
        producer.flush(30)
        sent_all.set()
        poller.join(90)
        cpu = time.process_time() - cpu
    finally:
        consumer.close()
        producer.close(timeout=10)
    if received < count:
        raise SystemExit(f"client overhead: polled {received} of {count} records in time")
    return {
        "cpu_ms": 1000 * cpu / count,
        "sensors_ms": 1000 * meter.cpu_s.get("sensors", 0.0) / count,
        "sensor_calls": meter.calls.get("sensors", 0) / count,
        "get_key_ms": 1000 * meter.cpu_s.get("get_key", 0.0) / count,
        "get_key_calls": meter.calls.get("get_key", 0) / count,
    }


def client_overhead(config: KafkaConfig, size: int, rounds: int, topics: list[str]) -> dict[str, Any]:
    """Interleaved rounds of each variant; the round with the least CPU per record kept for each. The topics it
    creates are added to `topics`, for the caller to delete."""
    meter = _Meter()
    best: dict[str, dict[str, float]] = {}
    with _metered(meter):
        for round_index in range(rounds):
            for name, options in VARIANTS.items():
                figures = _round(config, options, size, meter, topics)
                print(f"  client overhead, round {round_index + 1}: {name} "
                      + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()), file=sys.stderr)  # fmt: skip
                if name not in best or figures["cpu_ms"] < best[name]["cpu_ms"]:
                    best[name] = figures
    stock, vigil = best["kafka-python's"], best["vigil's"]
    print()
    print(
        f"client overhead: a producer and a consumer, {RATE:.0f} records/s of {size} B (least CPU of {rounds} rounds)"
    )
    for name, f in best.items():
        print(f"  {name:<15} {f['cpu_ms']:.2f} CPU ms/record; metrics {f['sensors_ms']:.3f} ms over "
              f"{f['sensor_calls']:.1f} sensor records, selector lookups {f['get_key_ms']:.3f} ms over "
              f"{f['get_key_calls']:.1f} calls")  # fmt: skip
    saved = stock["sensors_ms"] + stock["get_key_ms"] - vigil["sensors_ms"] - vigil["get_key_ms"]
    print(f"  vigil's clients: {stock['cpu_ms'] / vigil['cpu_ms']:.2f}x fewer CPU ms per record; the two costs "
          f"themselves {saved:.3f} ms per record less ({saved / stock['cpu_ms']:.1%} of kafka-python's)")  # fmt: skip
    return {
        "client_cpu_ms": round(vigil["cpu_ms"], 3),
        "client_cpu_ms_kafka_python": round(stock["cpu_ms"], 3),
        "client_metrics_ms_kafka_python": round(stock["sensors_ms"], 3),
        "client_lookup_ms_kafka_python": round(stock["get_key_ms"], 3),
        "client_lookup_ms": round(vigil["get_key_ms"], 3),
        "client_overhead_saved_ms": round(saved, 3),
    }
