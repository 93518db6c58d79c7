"""Review service benchmark: `GET /api/alerts` latency with 10,000 stored alerts under every filter,
the first and cached build of a 10 s alert's clip, the store's ingest rate, and the web process's
RSS. Each figure is set against a baseline run in the same process (a bare `/healthz` round trip,
a bare Kafka read of the same records / frames).

    VIGIL_TEST_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/bench_web.py [--alerts 10000] [--requests 200]

Without VIGIL_TEST_BOOTSTRAP it starts the embedded broker for the run. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import cv2
import httpx
from kafka.structs import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _broker import broker_for_bench

from vigil.config.loader import load_config
from vigil.contracts import AlertRecord, FrameMeta, FrameRef
from vigil.imaging import encode_jpeg
from vigil.kafka import ensure_topics, make_consumer, make_producer
from vigil.processes import free_port
from web.store import AlertStore, StoreError

NS = 1_000_000_000
TOKEN = "bench-token-" + "x" * 30
CAMERAS, RULES = ("north", "south", "east", "west"), ("porch", "drive", "yard")
REPO = Path(__file__).resolve().parents[1]


def write_config(folder: Path, bootstrap: str, stem: str, port: int) -> Path:
    path = folder / "bench.yaml"
    path.write_text(
        f"""
kafka: {{bootstrap_servers: ["{bootstrap}"]}}
topics:
  frames: {{name: {stem}.frames, partitions: 4, retention_ms: 3600000}}
  detections: {{name: {stem}.detections, partitions: 2}}
  alerts: {{name: {stem}.alerts, partitions: 2}}
  dead_letter: {{name: {stem}.dead-letter, partitions: 1}}
  status: {{name: {stem}.status, partitions: 1}}
cameras: [{{id: bench-cam, kind: replay, url: /dev/null, fps: 5}}]
web:
  port: {port}
  group_id: {stem}-web
  store: {folder / "store.sqlite3"}
  clip_cache_dir: {folder / "media"}
  tokens: [{{name: bench, role: admin, token: "{TOKEN}"}}]
  clip_pre_s: 5
  clip_post_s: 5
metrics: {{port: 0}}
"""
    )
    return path


def publish_alerts(config: object, count: int) -> list[bytes]:
    """`count` alerts (started + ended events each) over the last 20 days."""
    rng = random.Random(1)
    now = time.time_ns()
    producer = make_producer(config.kafka, "bench-alerts", linger_ms=20)  # type: ignore[attr-defined]
    values = []
    for n in range(count):
        start = now - rng.randrange(20 * 86_400) * NS
        camera = rng.choice(CAMERAS)
        base = dict(alert_id=f"al_{n:020x}", camera_id=camera, rule=rng.choice(RULES), zone="z", class_name=rng.choice(("person", "car")),
                    class_id=0, track_id=n, confidence=0.8, box=(10.0, 20.0, 110.0, 220.0), first_seen_ns=start,
                    frame=FrameRef("f", 0, n), latency_ms=10.0, snapshot_kind="frame_ref")  # fmt: skip
        for event, last in (("started", start), ("ended", start + rng.randrange(1, 60) * NS)):
            value = AlertRecord(event=event, last_seen_ns=last, **base).to_bytes()  # type: ignore[arg-type]
            values.append(value)
            producer.send(config.topics.alerts.name, key=camera.encode(), value=value)  # type: ignore[attr-defined]
    producer.flush(60)
    producer.close()
    return values


def bare_read_rate(config: object, topic: str, expected: int) -> float:
    """Records/s of a bare consumer reading the topic from the start (the ingest baseline)."""
    consumer = make_consumer(config.kafka, "bench-bare", None)  # type: ignore[attr-defined]
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    started, seen = time.perf_counter(), 0
    while seen < expected:
        for records in consumer.poll(timeout_ms=1000).values():
            for record in records:
                json.loads(record.value)
                seen += 1
    rate = seen / (time.perf_counter() - started)
    consumer.close()
    return rate


def latency(client: httpx.Client, path: str, params_list: list[dict[str, str]]) -> list[float]:
    times = []
    for params in params_list:
        t = time.perf_counter()
        response = client.get(path, params=params)
        times.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200, response.text[:200]
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def filters(client: httpx.Client, requests: int) -> list[dict[str, str]]:
    rng = random.Random(2)
    cursor = client.get("/api/alerts", params={"limit": 50}).json()["next_cursor"]
    day = time.time_ns() - 10 * 86_400 * NS
    choices = [
        {}, {"camera": "north"}, {"rule": "drive"}, {"label": "car"}, {"reviewed": "true"}, {"reviewed": "false"},
        {"verdict": "false_positive"}, {"after": str(day), "before": str(day + 86_400 * NS)},
        {"camera": "south", "rule": "yard", "label": "person", "reviewed": "false"}, {"cursor": cursor},
        {"camera": "nowhere"},
    ]  # fmt: skip
    return [rng.choice(choices) for _ in range(requests)]


def publish_frames(config: object, seconds: float, fps: float) -> tuple[int, int]:
    """A camera's frames for `seconds` (real footage, 640x480), ending 12 s ago; returns (first, last) ns."""
    capture = cv2.VideoCapture(
        str(REPO.parent / "shared" / "data" / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4")
    )
    jpegs = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        jpegs.append(encode_jpeg(image, 85))
    producer = make_producer(config.kafka, "bench-frames")  # type: ignore[attr-defined]
    count = int(seconds * fps)
    first = time.time_ns() - 12 * NS - int(seconds * NS)
    for n in range(count):
        capture_ns = first + int(n * NS / fps)
        meta = FrameMeta("bench-cam", n, capture_ns, 640, 480, "replay")
        producer.send(config.topics.frames.name, key=b"bench-cam", value=jpegs[n % len(jpegs)],  # type: ignore[attr-defined]
                      headers=meta.to_headers(), timestamp_ms=capture_ns // 1_000_000)  # fmt: skip
    producer.flush(60)
    producer.close()
    return first, first + int((count - 1) * NS / fps)


def run(args: argparse.Namespace, bootstrap: str) -> int:
    print(f"load: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min), cpus {os.cpu_count()}")
    folder = Path(tempfile.mkdtemp(prefix="vigil-bench-web-"))
    stem = f"bench-web-{uuid.uuid4().hex[:8]}"
    port = free_port()
    config_path = write_config(folder, bootstrap, stem, port)
    config = load_config(config_path, os.environ)
    ensure_topics(config.kafka, config.topics)
    publish_alerts(config, args.alerts)
    events = 2 * args.alerts
    bare_rate = bare_read_rate(config, config.topics.alerts.name, events)

    web = subprocess.Popen([sys.executable, "-m", "vigil", "web", "--config", str(config_path)], cwd=folder)
    base = f"http://127.0.0.1:{port}"
    try:
        store = AlertStore(config.web.store)
        started: float | None = None
        first_count = 0
        while True:
            try:
                count = store.open().count() if store.path.exists() else 0
            except StoreError:
                count = 0  # the web process is creating it
            if count and started is None:
                started, first_count = time.perf_counter(), count  # from the first rows: not import/join time
            if count >= args.alerts:
                break
            if web.poll() is not None:
                raise SystemExit("vigil web exited")
            time.sleep(0.02)
        assert started is not None
        ingest_s = max(1e-3, time.perf_counter() - started)
        store.close()
        ingest_rate = (args.alerts - first_count) / ingest_s
        print(f"store ingest:      {ingest_rate:9.0f} alerts/s ({2 * ingest_rate:.0f} events/s, Kafka -> SQLite + commit)"
              f"  vs bare Kafka read {bare_rate:9.0f} events/s  ratio {2 * ingest_rate / bare_rate:.3f}")  # fmt: skip
        client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
        while client.get("/readyz").status_code != 200:
            time.sleep(0.2)
        client.post(
            "/api/alerts/review",
            json={"ids": [f"al_{n:020x}" for n in range(0, 500)], "reviewed": True, "verdict": "false_positive"},
        )
        health = latency(client, "/healthz", [{}] * args.requests)
        alerts = latency(client, "/api/alerts", filters(client, args.requests))
        p50, p99 = pct(alerts, 0.5), pct(alerts, 0.99)
        h50, h99 = pct(health, 0.5), pct(health, 0.99)
        big = latency(client, "/api/alerts", [{"limit": "500"}] * max(10, args.requests // 10))
        b50, b99 = pct(big, 0.5), pct(big, 0.99)
        print(f"GET /api/alerts:   p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  ({args.alerts} alerts, mixed filters; target p99 <= 50)"
              f"  vs /healthz p50 {h50:5.1f} p99 {h99:5.1f} ms  ratio p50 {p50 / h50:.2f}")  # fmt: skip
        print(f"GET /api/alerts?limit=500: p50 {b50:6.1f} ms  p99 {b99:6.1f} ms (the largest page)")

        first_frame, last_frame = publish_frames(config, 20.0, 5.0)
        alert_start = first_frame + 5 * NS
        producer = make_producer(config.kafka, "bench-clip")
        ref = FrameRef(config.topics.frames.name, 0, 0)
        for event, last in (("started", alert_start), ("ended", alert_start + 10 * NS)):
            record = AlertRecord("al_clip", event, "bench-cam", "porch", None, "person", 0, 1, 0.9, (1, 2, 3, 4),  # type: ignore[arg-type]
                                 alert_start, last, ref, 1.0)  # fmt: skip
            producer.send(config.topics.alerts.name, key=b"bench-cam", value=record.to_bytes())
        producer.flush(30)
        producer.close()
        while client.get("/api/alerts/al_clip").json().get("state") != "ended":
            time.sleep(0.1)
        t = time.perf_counter()
        clip = client.get("/api/alerts/al_clip/clip.mp4")
        first_s = time.perf_counter() - t
        assert clip.status_code == 200, clip.text[:200]
        cached = latency(client, "/api/alerts/al_clip/clip.mp4", [{}] * 20)
        bare_consumer = make_consumer(config.kafka, "bench-frames-read", None)
        t = time.perf_counter()
        tps = [TopicPartition(config.topics.frames.name, p) for p in range(config.topics.frames.partitions)]
        bare_consumer.assign(tps)
        bare_consumer.seek_to_beginning(*tps)
        read = 0
        while read < 100:
            read += sum(len(r) for r in bare_consumer.poll(timeout_ms=500).values())
        bare_frames_s = time.perf_counter() - t
        bare_consumer.close()
        cached_ms = statistics.median(cached)
        print(f"clip (10 s alert): first {first_s * 1000:7.0f} ms ({len(clip.content) / 1024:.0f} KiB, 20 s at 5 fps; target <= 1000)"
              f"  cached {cached_ms:5.1f} ms (target <= 20)  vs bare Kafka read of its 100 frames {bare_frames_s * 1000:.0f} ms"
              f"  ratio {first_s / bare_frames_s:.2f}")  # fmt: skip
        rss_mb = 0.0
        for line in Path(f"/proc/{web.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_mb = int(line.split()[1]) / 1024
        print(f"web process RSS:   {rss_mb:7.1f} MiB after the run")
        client.close()
    finally:
        web.terminate()
        web.wait(30)
    print(json.dumps({
        "alerts": args.alerts, "list_p50_ms": round(p50, 2), "list_p99_ms": round(p99, 2), "healthz_p50_ms": round(h50, 2), "list500_p50_ms": round(b50, 2), "list500_p99_ms": round(b99, 2),
        "list_p50_ratio_vs_healthz": round(p50 / h50, 3), "store_alerts_per_s": round(ingest_rate, 1),
        "store_events_ratio_vs_bare_read": round(2 * ingest_rate / bare_rate, 3), "clip_first_ms": round(first_s * 1000, 1),
        "clip_cached_ms": round(cached_ms, 2), "clip_first_ratio_vs_bare_read": round(first_s / bare_frames_s, 3),
        "web_rss_mib": round(rss_mb, 1),
    }))  # fmt: skip
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    with broker_for_bench(os.environ.get("VIGIL_TEST_BOOTSTRAP")) as bootstrap:
        return run(args, bootstrap)


if __name__ == "__main__":
    raise SystemExit(main())
