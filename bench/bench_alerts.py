"""Alerts benchmark: detections records per second through the alert engine and the aggregator,
and webhook deliveries per second, each against a baseline run in the same process.

    VIGIL_TEST_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/bench_alerts.py [--frames 300] [--posts 500]

Without VIGIL_TEST_BOOTSTRAP it starts the embedded broker for the run. Ends with one JSON line of its figures:
{"bench": "alerts", "engine_rec_s", "aggregator_rec_s", "kept_alive_vs_connection_per_post", "deliverer_s", ...}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _broker import broker_for_bench

from alerts.aggregator import Aggregator
from alerts.cli import new_secret
from alerts.engine import AlertEngine
from alerts.http_post import KeptConnection, post
from alerts.webhooks import EndpointDeliverer, Signer
from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, DetectionsRecord, FrameRef, ModelRef
from vigil.detections import Detections
from vigil.kafka import ensure_topics, make_consumer, make_producer

NS = 1_000_000_000
CAMERAS, BOXES = 20, 10


def make_records(frames: int) -> list[bytes]:
    """20 cameras x 10 people each, drifting slowly, 5 fps; interleaved by frame like a live stream."""
    rng = np.random.default_rng(0)
    start = rng.uniform(0, 560, (CAMERAS, BOXES, 2))
    drift = rng.uniform(-3, 3, (CAMERAS, BOXES, 2))
    out: list[bytes] = []
    for f in range(frames):
        for c in range(CAMERAS):
            xy = np.clip(start[c] + drift[c] * f, 0, 560)
            xyxy = np.concatenate([xy, xy + [40, 100]], axis=1).astype(np.float32)
            dets = Detections(xyxy=xyxy, confidence=rng.uniform(0.3, 0.95, BOXES), class_id=np.zeros(BOXES, np.int32))
            record = DetectionsRecord(
                camera_id=f"cam{c:02d}",
                seq=f,
                capture_ns=1_700_000_000 * NS + f * NS // 5,
                frame=FrameRef("frames", c % 6, f),
                model=ModelRef("bench", "1"),
                width=640,
                height=480,
                detections=dets,
                class_names=("person",) * BOXES,
            )
            out.append(record.to_bytes())
    return out


def config_dict(bootstrap: str | None, name: str) -> dict[str, object]:
    cameras = [
        {
            "id": f"cam{c:02d}",
            "url": "rtsp://cam/stream",
            "zones": [
                {"name": "yard", "polygon": [[0.1, 0.3], [0.9, 0.3], [0.9, 0.95], [0.1, 0.95]], "units": "fraction"}
            ],
        }
        for c in range(CAMERAS)
    ]
    return {
        "kafka": {"bootstrap_servers": [bootstrap] if bootstrap else []},
        "topics": {
            "frames": {"name": f"{name}.frames", "partitions": 1},
            "detections": {"name": f"{name}.detections", "partitions": 6},
            "alerts": {"name": f"{name}.alerts", "partitions": 1},
            "dead_letter": {"name": f"{name}.dlq", "partitions": 1},
        },
        "cameras": cameras,
        "alerts": {
            "group_id": f"{name}-alerts",
            "rules": [{"name": "yard", "zone": "yard", "min_frames": 3, "update_every_s": 5.0, "cooldown_s": 10}],
            "rate_limit_per_minute": 1000,
            "snapshot": "frame_ref",
        },
        "metrics": {"enabled": False},
    }


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_engine(records: list[bytes]) -> tuple[float, float, int]:
    start = time.perf_counter()
    for value in records:
        json.loads(value)
    baseline = rate(len(records), time.perf_counter() - start)
    engine = AlertEngine.from_config(VigilConfig.model_validate(config_dict(None, "bench")))
    alerts = 0
    start = time.perf_counter()
    for value in records:
        alerts += len(engine.process(DetectionsRecord.from_bytes(value), 0))
    return baseline, rate(len(records), time.perf_counter() - start), alerts


def bench_broker(records: list[bytes], bootstrap: str) -> tuple[float, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    config = VigilConfig.model_validate(config_dict(bootstrap, name))
    ensure_topics(config.kafka, config.topics)
    producer = make_producer(config.kafka, "bench")
    for i, value in enumerate(records):
        producer.send(config.topics.detections.name, key=f"cam{i % CAMERAS:02d}".encode(), value=value)
    producer.flush()
    producer.close()
    # Baseline: a bare consumer group member reading the same records, no processing.
    consumer = make_consumer(config.kafka, "bench", f"{name}-bare", [config.topics.detections.name])
    seen, start = 0, None
    while seen < len(records):
        batch = consumer.poll(timeout_ms=1000)
        if batch and start is None:
            start = time.perf_counter()
        seen += sum(len(v) for v in batch.values())
    assert start is not None
    bare = rate(seen, time.perf_counter() - start)
    consumer.close()
    stop = threading.Event()
    aggregator = Aggregator(config, stop)
    thread = threading.Thread(target=aggregator.run, daemon=True)
    thread.start()
    while aggregator.engine.counters.records == 0:
        time.sleep(0.001)
    start = time.perf_counter()
    while aggregator.engine.counters.records < len(records):
        time.sleep(0.005)
    elapsed = time.perf_counter() - start
    stop.set()
    thread.join(timeout=30)
    return bare, rate(len(records), elapsed)


class _Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps a connection open for a client that wants it (urllib does not)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def sample_alert(n: int) -> AlertRecord:
    return AlertRecord(
        f"al_{n:06d}", "started", "cam00", "yard", "yard", "person", 0, n, 0.9, (1, 2, 3, 4), 1, 2,
        FrameRef("frames", 0, n), 10.0,
    )  # fmt: skip


def bench_webhooks(posts: int, bootstrap: str | None) -> tuple[float, float, float, float | None]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    bodies = [sample_alert(n).to_bytes() for n in range(posts)]
    start = time.perf_counter()
    for body in bodies:
        post(url, body, {}, 5.0)
    bare = rate(posts, time.perf_counter() - start)
    signer = Signer([new_secret(), new_secret()])
    start = time.perf_counter()
    for n, body in enumerate(bodies):
        post(url, body, signer.headers(f"al_{n:06d}.started", body.decode()), 5.0)
    signed = rate(posts, time.perf_counter() - start)
    kept = KeptConnection(url)  # what a deliverer posts with: one connection for every post
    start = time.perf_counter()
    for n, body in enumerate(bodies):
        kept(url, body, signer.headers(f"al_{n:06d}.started", body.decode()), 5.0)
    kept_alive = rate(posts, time.perf_counter() - start)
    assert kept.connections == 1, f"{kept.connections} connections for {posts} posts"
    kept.close()
    durable = None
    if bootstrap:
        name = f"bench-{uuid.uuid4().hex[:8]}"
        raw = config_dict(bootstrap, name)
        raw["alerts"]["webhooks"] = [{"name": "bench", "url": url, "secrets": [new_secret()]}]  # type: ignore[index]
        config = VigilConfig.model_validate(raw)
        ensure_topics(config.kafka, config.topics)
        producer = make_producer(config.kafka, "bench")
        for body in bodies:
            producer.send(config.topics.alerts.name, key=b"cam00", value=body)
        producer.flush()
        producer.close()
        stop = threading.Event()
        worker = EndpointDeliverer(config, config.alerts.webhooks[0], stop)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        while worker.delivered == 0:
            time.sleep(0.001)
        start = time.perf_counter()
        while worker.delivered < posts:
            time.sleep(0.005)
        durable = rate(posts - 1, time.perf_counter() - start)
        stop.set()
        thread.join(timeout=30)
    server.shutdown()
    return bare, signed, kept_alive, durable


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames per camera (x20 cameras)")
    parser.add_argument("--posts", type=int, default=500, help="webhook deliveries")
    args = parser.parse_args()
    with broker_for_bench(os.environ.get("VIGIL_TEST_BOOTSTRAP")) as bootstrap:
        return run(args, bootstrap)


def run(args: argparse.Namespace, bootstrap: str) -> int:
    print(
        f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1/5/15 min), cpus {os.cpu_count()}"
    )
    records = make_records(args.frames)
    print(f"{len(records)} detections records: {CAMERAS} cameras x {args.frames} frames x {BOXES} boxes")
    figures: dict[str, object] = {"bench": "alerts"}
    baseline, engine, alerts = bench_engine(records)
    figures |= {"engine_rec_s": round(engine), "engine_vs_json_loads": round(engine / baseline, 3)}
    print(
        f"engine in-process: {engine:9.0f} rec/s  vs bare json.loads {baseline:9.0f} rec/s  ratio {engine / baseline:.3f}  ({alerts} alert events)"
    )
    if bootstrap:
        bare, through = bench_broker(records, bootstrap)
        figures |= {"aggregator_rec_s": round(through), "aggregator_vs_bare_consumer": round(through / bare, 3)}
        print(
            f"aggregator+broker: {through:9.0f} rec/s  vs bare consumer  {bare:9.0f} rec/s  ratio {through / bare:.3f}"
        )
    bare_post, signed_post, kept_post, durable = bench_webhooks(args.posts, bootstrap)
    figures |= {"signed_post_s": round(signed_post), "signed_vs_bare_post": round(signed_post / bare_post, 3),
                "kept_alive_post_s": round(kept_post), "kept_alive_vs_connection_per_post": round(kept_post / signed_post, 3)}  # fmt: skip
    print(
        f"webhooks signed:   {signed_post:9.0f} req/s  vs bare POST loop {bare_post:9.0f} req/s  ratio {signed_post / bare_post:.3f}"
    )
    print(
        f"webhooks kept-alive connection: {kept_post:9.0f} req/s  vs a connection per post (urllib, signed) "
        f"{signed_post:9.0f} req/s  ratio {kept_post / signed_post:.3f}"
    )
    if durable is not None:
        print(
            f"webhooks durable:  {durable:9.0f} req/s  (deliverer: Kafka consume + sign + POST + commit) ratio {durable / bare_post:.3f}"
        )
        figures |= {"deliverer_s": round(durable), "deliverer_vs_bare_post": round(durable / bare_post, 3)}
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
