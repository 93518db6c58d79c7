"""Hostile-input benchmark: what a decompression bomb costs the detect worker and `vigil serve`.

    .venv/bin/python bench/bench_hostile.py [--bootstrap host:port] [--side 30000] [--parallel 6]

A bomb is a 64x64 JPEG whose start-of-frame marker is rewritten to declare `--side` x `--side` pixels
(a few KB that decode to side^2 x 3 bytes). Measured in child processes started here, each against a
baseline run in the same child (a 640x480 TUD-Campus frame):

1. `vigil detect` on the real broker (the embedded one, started here unless `--bootstrap`): seconds from
   publishing a frame to its detections record or dead letter, and the worker's peak RSS (VmHWM) before
   and after the bomb (sent twice: with headers declaring its size, and behind 640x480 headers).
2. `vigil serve`: seconds to answer one bomb, the server's peak RSS; then `--parallel` bombs at once; then
   `--parallel` legitimate 8K UHD (7680x4320) images at once, whose peak RSS shows the decode bound
   (detect.decode_concurrency x 7680 x 4320 x 3 bytes over the idle server).

Figures are ratios against the baseline; the last line is one JSON object with all of them. Other
processes share the CPUs: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _broker import broker_for_bench  # noqa: E402
from kafka import KafkaConsumer, TopicPartition  # noqa: E402

from vigil.config import VigilConfig  # noqa: E402
from vigil.contracts import FrameMeta  # noqa: E402
from vigil.kafka import ensure_topics, make_producer  # noqa: E402

FOOTAGE = REPO.parent / "shared" / "data" / "footage" / "TUD-Campus" / "TUD-Campus.mp4"
TOKEN = "bench-token-0123456789abcdef"
CAMERA = "bench"


def first_frame() -> np.ndarray:
    capture = cv2.VideoCapture(str(FOOTAGE))
    ok, frame = capture.read()
    capture.release()
    if not ok:
        raise SystemExit(f"cannot read {FOOTAGE}: lay the shared data beside the clone")
    return frame


def jpeg(image: np.ndarray) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes()


def bomb(side: int) -> bytes:
    small = jpeg(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    sof = small.index(b"\xff\xc0")
    return small[: sof + 5] + struct.pack(">HH", side, side) + small[sof + 9 :]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------- worker


def read_new(consumer: KafkaConsumer, timeout_s: float) -> list[object]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=200)
        if polled:
            return [r for items in polled.values() for r in items]
    return []


def bench_worker(bootstrap: str, side: int, workdir: Path) -> dict[str, float | str]:
    name = f"bench-hostile-{uuid.uuid4().hex[:8]}"
    config = VigilConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": [bootstrap]},
            "topics": {t: {"name": f"{name}.{t}", "partitions": 1} for t in ("frames", "detections", "alerts",
                                                                               "dead_letter", "status")},
            "cameras": [{"id": CAMERA, "url": str(FOOTAGE), "kind": "replay"}],
            "detect": {"group_id": f"{name}-detect", "batch_size": 1, "max_wait_ms": 0, "max_age_s": 3600},
            "metrics": {"enabled": False},
        }
    )  # fmt: skip
    ensure_topics(config.kafka, config.topics)
    config_file = workdir / "worker.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json", exclude_defaults=True)))
    outputs = KafkaConsumer(bootstrap_servers=[bootstrap], enable_auto_commit=False, group_id=None)
    parts = [TopicPartition(config.topics.detections.name, 0), TopicPartition(config.topics.dead_letter.name, 0)]
    outputs.assign(parts)
    outputs.seek_to_end(*parts)
    for tp in parts:
        outputs.position(tp)
    worker = subprocess.Popen(
        [sys.executable, "-m", "vigil", "detect", "--config", str(config_file)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(workdir / "worker.log", "wb"),
    )  # fmt: skip
    producer = make_producer(config.kafka, "bench-hostile")

    def send(value: bytes, width: int, height: int, seq: int) -> tuple[float, str]:
        meta = FrameMeta(CAMERA, seq, time.time_ns(), width, height, "replay")
        started = time.perf_counter()
        producer.send(config.topics.frames.name, key=CAMERA.encode(), value=value, headers=meta.to_headers())
        producer.flush()
        records = read_new(outputs, 300)
        if not records:
            raise SystemExit(f"no answer from the worker; see {workdir / 'worker.log'}")
        topic = str(records[0].topic)  # type: ignore[attr-defined]
        return time.perf_counter() - started, "dead letter" if topic == config.topics.dead_letter.name else "detected"

    try:
        frame = first_frame()
        send(jpeg(frame), frame.shape[1], frame.shape[0], 0)  # warm-up: group join, first inference
        base_s, _ = send(jpeg(frame), frame.shape[1], frame.shape[0], 1)
        base_rss = peak_rss_mb(worker.pid)
        bomb_s, outcome = send(bomb(side), side, side, 2)  # the headers declare the bomb's size
        hidden_s, hidden = send(bomb(side), frame.shape[1], frame.shape[0], 3)  # the headers lie
        bomb_rss = peak_rss_mb(worker.pid)
    finally:
        producer.close()
        outputs.close()
        worker.terminate()
        worker.wait(60)
    return {"worker_base_s": base_s, "worker_bomb_s": bomb_s, "worker_base_rss_mb": base_rss,
            "worker_bomb_rss_mb": bomb_rss, "worker_bomb_outcome": outcome, "worker_hidden_bomb_s": hidden_s,
            "worker_hidden_bomb_outcome": hidden}  # fmt: skip


# ---------------------------------------------------------------------------------------------- serve


def post(url: str, body: bytes) -> tuple[int, float]:
    request = urllib.request.Request(f"{url}/v1/detect", data=body, method="POST")
    request.add_header("Authorization", f"Bearer {TOKEN}")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        exc.read()
        status = exc.code
    return status, time.perf_counter() - started


def post_parallel(url: str, body: bytes, count: int) -> tuple[list[int], float]:
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        status, _ = post(url, body)
        with lock:
            statuses.append(status)

    started = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(statuses), time.perf_counter() - started


def bench_serve(side: int, parallel: int, workdir: Path) -> dict[str, float | str]:
    port = free_port()
    config_file = workdir / "serve.yaml"
    config_file.write_text(f"detect:\n  http:\n    port: {port}\n    token: ${{TOKEN}}\nmetrics:\n  enabled: false\n")
    server = subprocess.Popen(
        [sys.executable, "-m", "vigil", "serve", "--config", str(config_file)],
        cwd=REPO, env={**os.environ, "TOKEN": TOKEN}, stdout=subprocess.DEVNULL,
        stderr=open(workdir / "serve.log", "wb"),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"vigil serve did not start; see {workdir / 'serve.log'}") from None
            time.sleep(0.2)
    results: dict[str, float | str] = {}
    try:
        frame = first_frame()
        post(url, jpeg(frame))  # warm-up
        status, results["serve_base_s"] = post(url, jpeg(frame))
        assert status == 200, status
        results["serve_base_rss_mb"] = peak_rss_mb(server.pid)
        status, results["serve_bomb_s"] = post(url, bomb(side))
        results["serve_bomb_status"] = str(status)
        results["serve_bomb_rss_mb"] = peak_rss_mb(server.pid)
        if status != 200:  # only once bombs are refused: unrefused, N at once would exhaust the machine
            statuses, results["serve_bombs_parallel_s"] = post_parallel(url, bomb(side), parallel)
            results["serve_bombs_parallel_status"] = ",".join(map(str, statuses))
            results["serve_bombs_parallel_rss_mb"] = peak_rss_mb(server.pid)
            uhd = jpeg(cv2.resize(frame, (7680, 4320), interpolation=cv2.INTER_LINEAR))
            statuses, results["serve_8k_parallel_s"] = post_parallel(url, uhd, parallel)
            results["serve_8k_parallel_status"] = ",".join(map(str, statuses))
            results["serve_8k_parallel_rss_mb"] = peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("VIGIL_TEST_BOOTSTRAP"))
    parser.add_argument("--side", type=int, default=30000, help="declared width and height of the bomb")
    parser.add_argument("--parallel", type=int, default=6, help="requests sent at once to vigil serve")
    parser.add_argument("--skip-worker", action="store_true")
    args = parser.parse_args()
    figures: dict[str, float | str] = {"bomb_bytes": len(bomb(args.side)), "side": args.side}
    with tempfile.TemporaryDirectory(prefix="vigil-bench-hostile-") as tmp:
        workdir = Path(tmp)
        figures.update(bench_serve(args.side, args.parallel, workdir))
        if not args.skip_worker:
            with broker_for_bench(args.bootstrap) as bootstrap:
                figures.update(bench_worker(bootstrap, args.side, workdir))
    print(f"bomb: {figures['bomb_bytes']} bytes declaring {args.side}x{args.side} "
          f"({args.side * args.side * 3 / 1e9:.1f} GB decoded)")  # fmt: skip
    if "worker_bomb_s" in figures:
        f = figures
        print(f"detect worker: bomb {f['worker_bomb_outcome']} after {f['worker_bomb_s']:.2f} s "
              f"(x{float(f['worker_bomb_s']) / float(f['worker_base_s']):.1f} a 640x480 frame's "
              f"{f['worker_base_s']:.3f} s); peak RSS {f['worker_bomb_rss_mb']:.0f} MB "
              f"(x{float(f['worker_bomb_rss_mb']) / float(f['worker_base_rss_mb']):.2f} of "
              f"{f['worker_base_rss_mb']:.0f} MB before)")  # fmt: skip
        print(f"detect worker: bomb behind 640x480 headers {f['worker_hidden_bomb_outcome']} after "
              f"{f['worker_hidden_bomb_s']:.2f} s")  # fmt: skip
    f = figures
    print(f"vigil serve: bomb answered {f['serve_bomb_status']} after {f['serve_bomb_s']:.3f} s "
          f"(x{float(f['serve_bomb_s']) / float(f['serve_base_s']):.2f} a 640x480 request's "
          f"{f['serve_base_s']:.3f} s); peak RSS {f['serve_bomb_rss_mb']:.0f} MB "
          f"(x{float(f['serve_bomb_rss_mb']) / float(f['serve_base_rss_mb']):.2f} of "
          f"{f['serve_base_rss_mb']:.0f} MB before)")  # fmt: skip
    if "serve_8k_parallel_s" in f:
        print(f"vigil serve: {args.parallel} bombs at once: {f['serve_bombs_parallel_status']} in "
              f"{f['serve_bombs_parallel_s']:.3f} s, peak RSS {f['serve_bombs_parallel_rss_mb']:.0f} MB; "
              f"{args.parallel} 8K UHD images at once: {f['serve_8k_parallel_status']} in "
              f"{f['serve_8k_parallel_s']:.2f} s, peak RSS {f['serve_8k_parallel_rss_mb']:.0f} MB "
              f"(+{float(f['serve_8k_parallel_rss_mb']) - float(f['serve_base_rss_mb']):.0f} MB over the idle "
              f"server; one 8K frame decoded is {7680 * 4320 * 3 / 2**20:.0f} MiB)")  # fmt: skip
    print(f"load: {os.getloadavg()}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
