"""bench_kafka's client-overhead part: what kafka-python's client metrics and the standard selector's lookups cost
per record (vigil/kafka_io.py), on a paced producer and a consumer in this process, vigil's settings otherwise.

Two kinds of round:
* plain rounds: the process's CPU per record of each variant (noisy on a shared box: the median of the rounds'
  differences);
* then one timed round of each variant: the thread CPU inside every `Sensor.record` and selector `get_key` (the
  outermost call only: a sensor records into its parents, which are not counted again), which does not depend on
  what else the box runs. The timers themselves cost CPU, so these rounds give no CPU-per-record figure."""

from __future__ import annotations

import os
import selectors
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from _broker import wait_for_assignment
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
    """Thread CPU seconds and calls spent inside the wrapped functions, by name, outermost calls only."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = threading.local()
        self.cpu_s: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def reset(self) -> None:
        with self.lock:
            self.cpu_s, self.calls = {}, {}

    def totals(self) -> tuple[dict[str, float], dict[str, int]]:
        with self.lock:
            return dict(self.cpu_s), dict(self.calls)

    def wrap(self, name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self.depth, name, 0)
            if depth:  # inside an outer call of the same kind, which times this one too
                return function(*args, **kwargs)
            setattr(self.depth, name, 1)
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                spent = time.thread_time() - started
                setattr(self.depth, name, 0)
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
    """One paced round: the process's CPU per record, and what `meter` counted while the records flowed."""
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
        wait_for_assignment(consumer, topic)
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
        spent, calls = meter.totals()  # before the clients close
    finally:
        consumer.close()
        producer.close(timeout=10)
    if received < count:
        raise SystemExit(f"client overhead: polled {received} of {count} records in time")
    return {
        "cpu_ms": 1000 * cpu / count,
        "sensors_ms": 1000 * spent.get("sensors", 0.0) / count,
        "sensor_calls": calls.get("sensors", 0) / count,
        "get_key_ms": 1000 * spent.get("get_key", 0.0) / count,
        "get_key_calls": calls.get("get_key", 0) / count,
    }


def client_overhead(config: KafkaConfig, size: int, rounds: int, topics: list[str]) -> dict[str, Any]:
    """Interleaved plain rounds of each variant (CPU per record: medians, and the median of the rounds'
    differences), then one timed round of each.
    The topics it creates are added to `topics`, for the caller to delete."""
    meter = _Meter()  # counts nothing outside `_metered`
    cpu_ms: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for round_index in range(rounds):
        # Alternate which goes first, so a box that speeds up or slows down during a round favours neither.
        order = list(VARIANTS) if round_index % 2 == 0 else list(VARIANTS)[::-1]
        for name in order:
            figures = _round(config, VARIANTS[name], size, meter, topics)
            print(f"  client overhead, round {round_index + 1}: {name} {figures['cpu_ms']:.3f} CPU ms/record",
                  file=sys.stderr)  # fmt: skip
            cpu_ms[name].append(figures["cpu_ms"])
    timed: dict[str, dict[str, float]] = {}
    with _metered(meter):
        for name, options in VARIANTS.items():
            timed[name] = _round(config, options, size, meter, topics)
    stock, vigil = "kafka-python's", "vigil's"
    # Per round, the difference: the box's speed drifts between rounds more than the variants differ.
    differences = [a - b for a, b in zip(cpu_ms[stock], cpu_ms[vigil], strict=True)]
    median = {name: statistics.median(values) for name, values in cpu_ms.items()}
    print()
    print(f"client overhead: a producer and a consumer, {RATE:.0f} records/s of {size} B "
          f"(median of {rounds} rounds; the costs from one timed round each)")  # fmt: skip
    for name, f in timed.items():
        print(f"  {name:<15} {median[name]:.2f} CPU ms/record; metrics {f['sensors_ms']:.3f} ms over "
              f"{f['sensor_calls']:.1f} sensor records, selector lookups {f['get_key_ms']:.3f} ms over "
              f"{f['get_key_calls']:.1f} calls")  # fmt: skip
    saved = sum(timed[stock][k] - timed[vigil][k] for k in ("sensors_ms", "get_key_ms"))
    print(f"  vigil's clients: {statistics.median(differences):.2f} CPU ms per record less (median of the rounds' "
          f"differences: {', '.join(f'{d:+.2f}' for d in differences)}); the two costs themselves {saved:.3f} ms "
          "per record less")  # fmt: skip
    return {
        "client_cpu_ms": round(median[vigil], 3),
        "client_cpu_ms_kafka_python": round(median[stock], 3),
        "client_cpu_ms_saved": round(statistics.median(differences), 3),
        "client_metrics_ms_kafka_python": round(timed[stock]["sensors_ms"], 3),
        "client_lookup_ms_kafka_python": round(timed[stock]["get_key_ms"], 3),
        "client_lookup_ms": round(timed[vigil]["get_key_ms"], 3),
        "client_overhead_saved_ms": round(saved, 3),
    }
