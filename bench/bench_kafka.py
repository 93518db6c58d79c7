"""Kafka round-trip throughput for frame-sized records through the real broker.

Produces N records of --size bytes (50 KB: a 640x480 JPEG) with vigil's producer settings, then
consumes them all with vigil's consumer settings, and compares against two baselines measured in
the same process: kafka-python with its default settings on the same broker, and a raw loopback
TCP copy of the same bytes (the ceiling any broker round trip on this machine stays under).
Without --bootstrap it starts the embedded broker (EmbeddedBroker) on spare ports and reports its
start time and memory.

Then latency: produce -> poll of small records on one busy partition of four, the consumer polling every 5 ms
(the detect worker's loop while a batch infers), with kafka-python as it is against vigil's consumer, which
works around kafka-python 3.0 forgetting a busy partition from its fetch session (vigil/kafka_fetch.py); and
what a synchronous commit costs (the webhook deliverer used to commit each record so).

Then the fetch window (`detect.fetch_wait_ms`, `alerts.fetch_wait_ms`): frame-sized records at --window-rate a
second on three partitions (cameras), from a producer in a process of its own, polled every 5 ms by vigil's
consumer answered at the first record and with a 40 ms window, interleaved rounds: records per poll, this
process's (the consumer's) and the broker's CPU per record, produce -> poll p50 / p99.

Then the client overhead (vigil/kafka_io.py): a paced producer and a consumer in this process with kafka-python's
client metrics and standard selector against vigil's clients, interleaved rounds: CPU per record, then one timed
round each for the thread CPU inside the sensors and the selector lookups themselves (bench/_client_cost.py).

Ends with one JSON line: {"bench": "kafka", "round_trip_mb_s", "vs_defaults", "latency_p99_ms", ...}.

    .venv/bin/python bench/bench_kafka.py                      # embedded broker
    .venv/bin/python bench/bench_kafka.py --bootstrap 127.0.0.1:19092 --records 2000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _broker import wait_for_assignment  # bench/, the script's own folder
from _client_cost import client_overhead
from kafka import KafkaConsumer, KafkaProducer
from kafka.structs import OffsetAndMetadata, TopicPartition

from vigil.broker import EmbeddedBroker
from vigil.config import EmbeddedBrokerConfig, KafkaConfig, TopicConfig
from vigil.kafka import ensure_topics, gathering_fetches, make_admin, make_consumer, make_producer, subscribe


@dataclass(frozen=True)
class Run:
    name: str
    produce_s: float
    consume_s: float
    records: int
    size: int

    @property
    def mb(self) -> float:
        return self.records * self.size / 1e6

    @property
    def round_trip_s(self) -> float:
        return self.produce_s + self.consume_s

    def rate(self, seconds: float) -> tuple[float, float]:
        return self.mb / seconds, self.records / seconds


def progress(label: str, done: int, total: int, started: float) -> None:
    print(f"\r  {label}: {done}/{total} ({time.monotonic() - started:.1f}s)", end="", file=sys.stderr, flush=True)
    if done == total:
        print(file=sys.stderr)


def delete_topics(config: KafkaConfig, topics: list[str]) -> None:
    admin = make_admin(config)
    try:
        admin.delete_topics(topics)
    finally:
        admin.close()


def loopback_copy_s(payload: bytes, records: int) -> float:
    """Seconds to push the same bytes through a loopback TCP connection (no broker, no protocol)."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    total = len(payload) * records
    received = 0

    def drain() -> None:
        nonlocal received
        conn, _ = server.accept()
        with conn:
            while received < total:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                received += len(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as client:
        for _ in range(records):
            client.sendall(payload)
    reader.join()
    elapsed = time.monotonic() - started
    server.close()
    assert received == total, f"loopback copied {received} of {total} bytes"
    return elapsed


def produce_consume(
    name: str,
    payloads: list[bytes],
    topic: str,
    producer: KafkaProducer,
    consumer_factory: Callable[[], KafkaConsumer],
) -> Run:
    total = len(payloads)
    step = max(1, total // 10)
    started = time.monotonic()
    for index, payload in enumerate(payloads, 1):
        producer.send(topic, key=f"cam-{index % 4}".encode(), value=payload)
        if index % step == 0 or index == total:
            progress(f"{name} produce", index, total, started)
    producer.flush(timeout=120)
    produce_s = time.monotonic() - started
    producer.close()

    started = time.monotonic()
    consumer = consumer_factory()
    got = 0
    deadline = started + 180
    while got < total and time.monotonic() < deadline:
        before = got
        for batch in consumer.poll(timeout_ms=500).values():
            got += len(batch)
        if got // step != before // step or got >= total:
            progress(f"{name} consume", min(got, total), total, started)
    consume_s = time.monotonic() - started
    consumer.close()
    if got < total:
        raise SystemExit(f"{name}: consumed only {got} of {total} records within 180s")
    return Run(name, produce_s, consume_s, total, len(payloads[0]))


def poll_latency_ms(consumer: KafkaConsumer, producer: KafkaProducer, topic: str, records: int) -> np.ndarray:
    """Send `records` timestamps, 25 a second, to one partition; milliseconds until a 5 ms poll loop has each."""
    seen: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=5)
            now = time.time_ns()
            seen.extend((now - int(r.value)) / 1e6 for batch in polled.values() for r in batch)

    wait_for_assignment(consumer, topic)  # before the poll thread: a consumer is polled by one thread at a time
    thread = threading.Thread(target=poll)
    thread.start()
    try:
        time.sleep(1.0)
        for _ in range(records):
            producer.send(topic, key=b"cam0", value=str(time.time_ns()).encode())
            time.sleep(0.04)
        deadline = time.monotonic() + 15
        while len(seen) < records and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    return np.asarray(seen)


def latency(config: KafkaConfig, bootstrap: str, rounds: int, records: int = 100) -> dict[str, Any]:
    """kafka-python as it is against vigil's consumer, interleaved rounds, the best p99 of each kept."""
    producer = make_producer(config, "bench")
    best: dict[str, np.ndarray] = {}
    topics = []
    for _ in range(rounds):
        for name in ("kafka-python as it is", "vigil consumer"):
            topic = f"bench-latency-{uuid.uuid4().hex[:8]}"
            topics.append(topic)
            ensure_topics(config, [TopicConfig(name=topic, partitions=4)])
            if name == "vigil consumer":
                consumer = make_consumer(config, "bench", f"{topic}-group", [topic])
            else:
                # Subscribed once the new topic's metadata is in: joining before it wedges kafka-python 3.0's
                # rejoin (`vigil.kafka.subscribe`), which is not the fetch behaviour this part compares.
                consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=f"{topic}-group")
                subscribe(consumer, [topic])
            try:
                ms = poll_latency_ms(consumer, producer, topic, records)
            finally:
                consumer.close()
            if name not in best or np.percentile(ms, 99) < np.percentile(best[name], 99):
                best[name] = ms
    # One synchronous commit per record, as the webhook deliverer did.
    topic = topics[-1]
    consumer = make_consumer(config, "bench", f"{topic}-commits", [topic])
    commits = []
    try:
        wait_for_assignment(consumer, topic)
        tp = TopicPartition(topic, next(iter(consumer.assignment())).partition)
        for offset in range(1, 31):
            started = time.perf_counter()
            consumer.commit({tp: OffsetAndMetadata(offset, "", -1)})
            commits.append((time.perf_counter() - started) * 1000)
    finally:
        consumer.close()
        producer.close()
    delete_topics(config, topics)
    print()
    print(f"produce -> poll, one busy partition of 4, 5 ms polls, {records} records at 25/s (best p99 of {rounds})")
    base = np.percentile(best["kafka-python as it is"], 99)
    for name, ms in best.items():
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        print(f"  {name:<24} p50 {p50:6.1f} ms  p90 {p90:6.1f} ms  p99 {p99:6.1f} ms  "
              f"= {base / p99:.1f}x lower p99 than as it is")  # fmt: skip
    print(f"synchronous commit: p50 {np.median(commits):.1f} ms, max {max(commits):.1f} ms")
    vigil = best["vigil consumer"]
    return {"latency_p50_ms": round(float(np.median(vigil)), 1),
            "latency_p99_ms": round(float(np.percentile(vigil, 99)), 1),
            "latency_p99_ms_kafka_python_as_is": round(float(base), 1),
            "latency_p99_vs_as_is": round(float(base / np.percentile(vigil, 99)), 2),
            "sync_commit_p50_ms": round(float(np.median(commits)), 1)}  # fmt: skip


WINDOW_MS = 40


def _paced_frames(bootstrap: str, topic: str, rate: float, seconds: float, size: int, pacing: Any) -> None:
    """The fetch-window part's producer, in its own process so its CPU is not the consumer's; sets `pacing`
    once connected, so the consumer's clocks leave out this process's start."""
    producer = make_producer(KafkaConfig(bootstrap_servers=[bootstrap]), "bench")
    payload = os.urandom(size)
    pacing.set()
    start = time.monotonic()
    for seq in range(int(rate * seconds)):
        time.sleep(max(0.0, start + seq / rate - time.monotonic()))
        producer.send(topic, key=f"cam{seq % 3}".encode(), value=payload)
    producer.close(timeout=10)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch_window(
    config: KafkaConfig, bootstrap: str, broker_pid: int | None, args: argparse.Namespace
) -> dict[str, Any]:
    """Answered at the first record against a WINDOW_MS fetch window, interleaved rounds, the round with the
    least consumer CPU per record kept for each."""
    spawn = multiprocessing.get_context("spawn")
    best: dict[int, dict[str, float]] = {}
    topics = []
    for _ in range(args.rounds):
        for wait_ms in (0, WINDOW_MS):
            topic = f"bench-window-{uuid.uuid4().hex[:8]}"
            topics.append(topic)
            ensure_topics(config, [TopicConfig(name=topic, partitions=3)])
            consumer = make_consumer(config, "bench", f"{topic}-group", [topic], **gathering_fetches(config, wait_ms))
            pacing = spawn.Event()
            sender = spawn.Process(
                target=_paced_frames, args=(bootstrap, topic, args.window_rate, args.window_s, args.size, pacing)
            )
            expected = int(args.window_rate * args.window_s)
            lags: list[float] = []
            polls = 0
            try:
                wait_for_assignment(consumer, topic)
                sender.start()
                if not pacing.wait(60):
                    raise SystemExit(f"the fetch-window producer did not connect in 60 s (exit code {sender.exitcode})")
                cpu, broker_cpu = time.process_time(), _cpu_s(broker_pid) if broker_pid else 0.0
                deadline = time.monotonic() + args.window_s + 30
                while len(lags) < expected and time.monotonic() < deadline:
                    if not sender.is_alive() and sender.exitcode:
                        raise SystemExit(f"the fetch-window producer failed (exit code {sender.exitcode})")
                    polled = consumer.poll(timeout_ms=5)
                    now_ms = time.time() * 1000
                    polls += bool(polled)
                    lags.extend(now_ms - r.timestamp for batch in polled.values() for r in batch)
                cpu, broker_cpu = time.process_time() - cpu, (_cpu_s(broker_pid) - broker_cpu if broker_pid else 0.0)
            finally:
                consumer.close()
                if sender.is_alive():
                    sender.join(15)
                if sender.is_alive():
                    sender.terminate()
                    sender.join(5)
            if len(lags) < expected:
                raise SystemExit(f"window {wait_ms} ms: polled {len(lags)} of {expected} records in time")
            figures = {"records_per_poll": len(lags) / max(polls, 1), "cpu_ms": 1000 * cpu / max(len(lags), 1),
                       "broker_cpu_ms": 1000 * broker_cpu / max(len(lags), 1),
                       "p50_ms": float(np.percentile(lags, 50)), "p99_ms": float(np.percentile(lags, 99))}  # fmt: skip
            print(f"  window {wait_ms} ms: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), file=sys.stderr)
            if wait_ms not in best or figures["cpu_ms"] < best[wait_ms]["cpu_ms"]:
                best[wait_ms] = figures
    delete_topics(config, topics)
    print()
    print(f"fetch window: {args.window_rate:.0f} records/s of {args.size} B on 3 partitions, 5 ms polls "
          f"(least consumer CPU of {args.rounds} rounds)")  # fmt: skip
    at_once = best[0]

    def broker_ms(f: dict[str, float]) -> str:
        return f"{f['broker_cpu_ms']:.2f}" if broker_pid else "n/a (a given broker)"

    for wait_ms, f in best.items():
        print(f"  {wait_ms:>3} ms: {f['records_per_poll']:.1f} records/poll, consumer {f['cpu_ms']:.2f} CPU ms/record "
              f"({at_once['cpu_ms'] / f['cpu_ms']:.2f}x fewer), broker {broker_ms(f)}, "
              f"produce -> poll p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms")  # fmt: skip
    window = best[WINDOW_MS]
    return {"window_ms": WINDOW_MS,
            "window_records_per_poll": round(window["records_per_poll"], 2),
            "window_consumer_cpu_ms": round(window["cpu_ms"], 2),
            "at_once_consumer_cpu_ms": round(at_once["cpu_ms"], 2),
            "window_consumer_cpu_vs_at_once": round(at_once["cpu_ms"] / window["cpu_ms"], 3),
            "window_p99_ms": round(window["p99_ms"], 1), "at_once_p99_ms": round(at_once["p99_ms"], 1)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", help="host:port of a running broker (default: start the embedded one)")
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50_000, help="record size in bytes (default 50 KB)")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; the best of each is reported")
    parser.add_argument("--window-rate", type=float, default=50.0, help="fetch-window part: records a second")
    parser.add_argument("--window-s", type=float, default=12.0, help="fetch-window part: seconds a round")
    args = parser.parse_args()

    broker: EmbeddedBroker | None = None
    state = None
    if args.bootstrap:
        bootstrap = args.bootstrap
        print(f"broker: {bootstrap} (given; start time and RSS not measured)")
    else:
        state = tempfile.TemporaryDirectory(prefix="vigil-bench-kafka-")
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            port, controller = a.getsockname()[1], b.getsockname()[1]
        broker = EmbeddedBroker(
            EmbeddedBrokerConfig(port=port, controller_port=controller, state_dir=state.name),
            state_dir=Path(state.name),
        )
        broker.fetch()  # jar download (first use only) is not start time
        started = time.monotonic()
        bootstrap = broker.start(180)
        start_s = time.monotonic() - started
        rss = broker.status().rss_mb
        print(f"broker: embedded Apache Kafka {broker.config.kafka_version} at {bootstrap}")
        print(f"broker start (format + JVM + ready): {start_s:.1f}s, RSS after start: {rss:.0f} MB")

    try:
        return bench(args, bootstrap, broker)
    finally:
        if broker is not None:
            broker.stop(30)
        if state is not None:
            state.cleanup()


def bench(args: argparse.Namespace, bootstrap: str, broker: EmbeddedBroker | None) -> int:
    config = KafkaConfig(bootstrap_servers=[bootstrap])
    payloads = [os.urandom(args.size) for _ in range(min(args.records, 64))]
    payloads = [payloads[i % len(payloads)] for i in range(args.records)]
    mb = args.records * args.size / 1e6
    print(f"workload: {args.records} records x {args.size} B = {mb:.1f} MB, {args.partitions} partitions")

    loop_s = min(loopback_copy_s(payloads[0], args.records) for _ in range(3))
    print(f"loopback TCP copy: {mb / loop_s:.0f} MB/s")

    best: dict[str, Run] = {}
    topics: list[str] = []
    for round_index in range(args.rounds):
        for name in ("kafka-python defaults", "vigil settings"):
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            topics.append(topic)
            ensure_topics(config, [TopicConfig(name=topic, partitions=args.partitions)])
            group = f"{topic}-group"
            if name == "vigil settings":
                producer = make_producer(config, "bench")

                def consumer_factory(t: str = topic, g: str = group) -> KafkaConsumer:
                    return make_consumer(config, "bench", g, [t])
            else:
                producer = KafkaProducer(bootstrap_servers=bootstrap)

                def consumer_factory(t: str = topic, g: str = group) -> KafkaConsumer:
                    return KafkaConsumer(t, bootstrap_servers=bootstrap, group_id=g, auto_offset_reset="earliest")

            print(f"round {round_index + 1}/{args.rounds}: {name}", file=sys.stderr)
            run = produce_consume(name, payloads, topic, producer, consumer_factory)
            if name not in best or run.round_trip_s < best[name].round_trip_s:
                best[name] = run

    delete_topics(config, topics)

    base = best["kafka-python defaults"]
    print()
    print(f"{'settings':<24}{'produce MB/s':>14}{'consume MB/s':>14}{'round trip MB/s':>17}{'records/s':>11}"
          f"{'vs defaults':>13}{'vs loopback':>13}")  # fmt: skip
    for run in best.values():
        produce_mb, _ = run.rate(run.produce_s)
        consume_mb, _ = run.rate(run.consume_s)
        trip_mb, trip_rec = run.rate(run.round_trip_s)
        print(
            f"{run.name:<24}{produce_mb:>14.1f}{consume_mb:>14.1f}{trip_mb:>17.1f}{trip_rec:>11.0f}"
            f"{base.round_trip_s / run.round_trip_s:>12.2f}x{loop_s / run.round_trip_s:>12.3f}x"
        )
    if broker is not None:
        status: Any = broker.status()
        print(f"broker RSS after the benchmark: {status.rss_mb:.0f} MB")
    vigil = best["vigil settings"]
    figures: dict[str, Any] = {"bench": "kafka", "record_bytes": args.size, "records": args.records,
                               "round_trip_mb_s": round(vigil.rate(vigil.round_trip_s)[0], 1),
                               "vs_defaults": round(base.round_trip_s / vigil.round_trip_s, 3),
                               "vs_loopback": round(loop_s / vigil.round_trip_s, 4)}  # fmt: skip
    figures |= latency(config, bootstrap, args.rounds)
    broker_pid = broker.status().pid if broker is not None else None
    figures |= fetch_window(config, bootstrap, broker_pid, args)
    client_topics: list[str] = []  # the round-trip part's `topics` are deleted already
    try:
        figures |= client_overhead(config, args.size, args.rounds, client_topics)
    finally:
        if client_topics:
            delete_topics(config, client_topics)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
