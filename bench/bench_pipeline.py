"""Whole-pipeline benchmark (a script, not a test): the real stack through the embedded broker versus the
detection function alone and the bare model on the same frames, all in one run (one broker for every stack).

* pipeline  — `vigil up --exit-when-done` (ingest -> frames topic -> N detection workers -> detections topic ->
              aggregator -> webhook) on the busy footage re-encoded to H.264, the cameras paced (`replay.realtime`)
              at --pace x the stack's rate, as live cameras are: frames/s detected from the first detections
              record to the last one produced while ingest still published, and each process's CPU in that
              window (ingest's per frame it published, the others' per frame detected). A free-running replay
              (as fast as Kafka accepts) comes first: it warms the broker and gives a first rate, but it runs
              ahead of the workers (most frames are published while they load the model), so its window leaves
              out most of ingest's CPU and it is not the figure. One paced round at --pace x that rate follows;
              the counted rounds are paced at --pace x the larger of the two rates.
* sustained — the cameras a user can add before frames queue: paced rounds searching the highest offered rate
              the stack keeps up with (detects >= 97 % of what ingest publishes in the window), from the rate
              reached at --pace up by 8 % a round until it falls behind, then halving the interval (--search
              rounds). Above it ingest decodes and publishes frames the workers cannot take, on the cores they
              need, so the rate at --pace reads lower; the larger of the two is the pipeline figure.
* alone     — `Detector.stream` on the same JPEG bytes read back from the frames topic, in this process.
* bare      — `session.run` at batch 1 on pre-made tensors with ONNX Runtime's default session options:
              Frigate's rule of thumb, 1000 / inference ms detections a second.
* cameras   — 5 fps cameras the machine sustains: pipeline frames/s / 5 on the busy footage (motion gating
              would skip 0-3 % of it), and on a scene idle 80 % of the time, searched the same way from the busy
              footage's rate up by 30 % a round (the shared clips separated by static stretches of their own
              first frame with sensor noise; motion gating on, still frames reuse the last detections:
              `cameras[].motion.still_frames: publish`, `detect.stationary`).
* latency   — capture of the frame that started an alert -> webhook received, `started` events only, with the
              recording paced at half the measured capacity; p50/p99 and per hop (ingest publish, frames lag,
              batch wait, inference, detections publish, aggregator, webhook) from the timestamps the records
              carry, the slowest hop named.
* --compare KEY=V1,V2  throughput of the stack with each value of a config key, interleaved over --rounds
              (best kept, ratios against the first value), e.g. detect.spin_wait=never,always.

Ends with one JSON line: {"bench": "pipeline", "model", "pipeline_fps", "alone_fps", "bare_fps", ...}.

    .venv/bin/python bench/bench_pipeline.py [--workers 1] [--threads 0] [--model yolox_nano] [--rounds 2]
        [--pace 1.15] [--search 4] [--seconds 20] [--set detect.max_wait_ms=10 ...] [--compare detect.spin_wait=never,always]
        [--skip-latency] [--skip-idle] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from _pipeline_measure import (  # noqa: E402
    HOPS,
    INFERENCE_PARTS,
    StallProbe,
    Throughput,
    alone_fps,
    bare_fps,
    hop_breakdown,
    load,
    model_busy,
    throughput,
    topic_records,
    tree_cpu_s,
)
from _scenes import SHARED, idle_scene, latency_scene, read_clip, write_h264  # noqa: E402

from detect.detector import Detector  # noqa: E402
from vigil.broker import EmbeddedBroker  # noqa: E402
from vigil.config import VigilConfig  # noqa: E402
from vigil.config.loader import parse_config  # noqa: E402

MAX_CAMERA_FPS = 60  # cameras[].fps's bound: more offered frames/s take more cameras


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.started: list[tuple[dict[str, Any], int]] = []  # (alert, received wall ns)


class Handler(BaseHTTPRequestHandler):
    server: Receiver
    protocol_version = "HTTP/1.1"  # keep-alive, as production receivers (nginx, uvicorn, ...) offer

    def do_POST(self) -> None:
        received = time.time_ns()
        alert = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if alert["event"] == "started":
            self.server.started.append((alert, received))
        self.send_response(204)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply(data: Any, key: str, value: Any) -> None:
    """Set a dotted key (`detect.spin_wait`, `cameras.0.max_width`, `cameras.*.max_width`) in a config dict."""
    head, _, rest = key.partition(".")
    if isinstance(data, list):
        for item in data if head == "*" else [data[int(head)]]:
            if rest:
                apply(item, rest, value)
        if not rest:
            data[int(head)] = value
    elif rest:
        apply(data.setdefault(head, {}), rest, value)
    else:
        data[head] = value


@dataclass
class Bench:
    work: Path
    model: str
    workers: int
    threads: int
    hook: str
    ports: tuple[int, int]
    overrides: list[tuple[str, Any]]
    cameras: int = 1
    runs: int = 0

    def config(
        self,
        video: Path,
        realtime: bool,
        fps: float,
        motion: bool,
        extra: list[tuple[str, Any]],
        cameras: int | None = None,
        source_fps: float = 25,
    ) -> Path:
        """A stack's config: `cameras` (default `self.cameras`) replaying `video`, each sampled at `fps` of a
        recording whose true rate is taken to be `source_fps` (paced at it when `realtime`)."""
        self.runs += 1
        run = f"r{self.runs}-{secrets.token_hex(2)}"
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
        data: dict[str, Any] = {
            "kafka": {"embedded": {"port": self.ports[0], "controller_port": self.ports[1],
                                   "state_dir": str(self.work / "kafka")}},
            "topics": {"frames": {"name": f"{run}.frames", "partitions": 4},
                       "detections": {"name": f"{run}.detections", "partitions": 4},
                       "alerts": {"name": f"{run}.alerts", "partitions": 1},
                       "dead_letter": {"name": f"{run}.dlq", "partitions": 1},
                       "status": {"name": f"{run}.status", "partitions": 1}},
            "cameras": [{"id": camera, "kind": "replay", "url": str(video), "fps": fps,
                         "replay": {"realtime": realtime, "source_fps": source_fps},
                         "motion": {"enabled": motion},
                         "zones": [{"name": "lower", "units": "fraction",
                                    "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]}
                        for camera in spread_ids(cameras or self.cameras, 4)],
            "detect": {"model": self.model, "max_age_s": 3600, "group_id": f"{run}-detect",
                       "intra_op_threads": self.threads},
            "alerts": {"group_id": f"{run}-alerts",
                       "rules": [{"name": "lower", "zone": "lower", "min_frames": 2, "end_after_s": 1}],
                       "webhooks": [{"name": "rx", "url": self.hook, "secrets": [secret], "max_backoff_s": 1}]},
            "web": {"enabled": False},  # the pipeline's own figures; bench_web.py measures the review service
            "metrics": {"port": 0},
        }  # fmt: skip
        for key, value in [*self.overrides, *extra]:
            apply(data, key, value)
        path = self.work / f"{run}.yaml"
        path.write_text(yaml.safe_dump(data))
        parse_config(path.read_text(), str(path), {})  # refuse a bad --set before running anything
        return path

    def run_stack(
        self, config: Path, workers: int | None = None, tree: str | None = None
    ) -> list[tuple[int, dict[str, float]]]:
        """Run the stack to the end; returns (wall ns, CPU seconds used so far by the stack and the broker),
        sampled every 0.2 s, so a window's CPU cost can be read off whatever else the machine runs."""
        env = dict(os.environ)
        if tree is not None:  # the stack's code from another source tree (its packages come first on the path)
            env["PYTHONPATH"] = str(Path(tree).resolve())
        process = subprocess.Popen(
            [sys.executable, "-m", "vigil", "up", "--config", str(config), "--exit-when-done", "--workers",
             str(workers or self.workers), "--progress-every", "30"],
            cwd=self.work, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        samples: list[tuple[int, dict[str, float]]] = []
        seen: dict[int, tuple[str, float]] = {}  # every process seen, with its last CPU (an ended one keeps it)
        while process.poll() is None:
            for pid, (role, cpu_s) in tree_cpu_s(process.pid).items():
                # A zombie's cmdline is empty: it keeps the role it was seen with.
                seen[pid] = (seen[pid][0] if pid in seen else role, cpu_s)
            by_role: dict[str, float] = {}
            for role, cpu_s in seen.values():
                by_role[role] = by_role.get(role, 0.0) + cpu_s
            by_role["broker"] = sum(cpu_s for _, cpu_s in tree_cpu_s(self.broker_pid).values())
            samples.append((time.time_ns(), by_role))
            time.sleep(0.2)
        if process.returncode != 0:
            raise SystemExit(f"vigil up failed (exit {process.returncode}) on {config}")
        return samples

    broker_pid: int = 0


def spread_ids(count: int, partitions: int) -> list[str]:
    """Camera ids that kafka-python's default partitioner puts on different partitions (while there are
    enough), taken in bit-reversed partition order (0, 2, 1, 3 of 4): the range assignor gives each of W
    workers a contiguous block of partitions, so the first cameras land on different workers."""
    from kafka.partitioner.default import murmur2

    bits = max(1, (partitions - 1).bit_length())
    order = sorted(range(partitions), key=lambda p: int(format(p, f"0{bits}b")[::-1], 2))
    by_partition: dict[int, list[str]] = {}
    for n in range(10_000):
        name = f"cam{n}"
        by_partition.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % partitions, []).append(name)
        if all(len(by_partition.get(p, [])) * partitions >= count for p in order):
            break
    ids: list[str] = []
    depth = 0
    while len(ids) < count:
        ids += [by_partition[p][depth] for p in order if len(ids) < count and depth < len(by_partition[p])][
            : count - len(ids)
        ]
        depth += 1
    return ids


def pacing(total_fps: float, cameras: int) -> tuple[int, float]:
    """(cameras, frames/s each) that offer `total_fps` in all: at least `cameras`, each at most MAX_CAMERA_FPS."""
    count = max(cameras, math.ceil(total_fps / MAX_CAMERA_FPS))
    return count, round(total_fps / count, 1)


KEPT_UP = 0.97  # a round kept up when it detected this share of the frames offered in its window


@dataclass(frozen=True)
class Sustained:
    """The highest offered rate at which the stack kept up (detected >= KEPT_UP x offered in the window):
    the cameras a user can add before frames queue. A pace above it makes ingest decode and publish frames
    the workers cannot take, which costs the cores they need, so throughput under overload reads lower."""

    run: Throughput | None  # that round; None when no round kept up
    samples: list[tuple[int, dict[str, float]]]
    tried: list[tuple[float, float]]  # (offered, detected) frames/s of each round, in order

    @property
    def fps(self) -> float:
        return self.run.fps if self.run else 0.0


def sustained(
    bench: Bench,
    recording: Callable[[float], Path],
    motion: bool,
    start_fps: float,
    cameras: int,
    rounds: int,
    step: float,
    label: str,
) -> Sustained:
    """Search the offered rate: up by `step` while the stack keeps up (down while it does not), then halve
    the interval between the highest rate kept up and the lowest not, for `rounds` paced rounds in all.
    `recording(camera_fps)` gives the video each camera replays at that rate."""
    low: tuple[float, Throughput, list[tuple[int, dict[str, float]]]] | None = None
    high = math.inf
    target = start_fps
    tried: list[tuple[float, float]] = []
    for n in range(rounds):
        count, camera_fps = pacing(target, cameras)
        path = bench.config(recording(camera_fps), True, camera_fps, motion, [], count, camera_fps)
        samples = bench.run_stack(path)
        run = throughput(load(path))
        kept = run.fps >= KEPT_UP * run.offered_fps
        tried.append((run.offered_fps, run.fps))
        print(f"  {label} search {n + 1}/{rounds}: {count} cameras x {camera_fps} frames/s: {run.fps:.1f} of "
              f"{run.offered_fps:.1f} offered: {'kept up' if kept else 'fell behind'} "
              f"(load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
        if kept and (low is None or target > low[0]):
            low = (target, run, samples)
        elif not kept:
            high = min(high, target)
        if high == math.inf:
            target *= step
        elif low is None:
            target /= step
        else:
            target = (low[0] + high) / 2
    return Sustained(low[1] if low else None, low[2] if low else [], tried)


def latency(bench: Bench, receiver: Receiver, clip: str, fps: float, cameras: int, repeats: int = 3) -> dict[str, Any]:
    """Capture -> webhook of `started` alerts with each camera paced at `fps`, and the hops they took, on the
    clip repeated after an empty lead-in (`latency_scene`): the stack's start-up is not in the figures."""
    receiver.started.clear()
    scene = latency_scene(bench.work / f"latency-{clip}-{repeats}.mp4", clip, repeats=repeats)
    # Every started alert is a sample: the per-camera rate limit (30 a minute) would stop at 60 whatever the scene.
    path = bench.config(scene, True, fps, False, [("alerts.rate_limit_per_minute", 100_000)])
    probe = StallProbe()
    probe.start()
    try:
        bench.run_stack(path)
    finally:
        probe.done.set()
        probe.join()
    machine = probe.summary()
    hops = hop_breakdown(load(path), list(receiver.started))
    total = np.asarray(hops["total"])
    if not total.size:
        print("capture -> webhook: no started alert was delivered")
        return {"latency_fps": fps, "latency_alerts": 0}
    p50, p95, p99 = (float(v) for v in np.percentile(total, [50, 95, 99]))
    print(f"capture -> webhook, started events, {cameras} camera(s) at {fps:.0f} frames/s each: p50 "
          f"{p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, max {total.max():.0f} ms over {total.size} alerts "
          "(target p99 <= 250 ms)")  # fmt: skip
    print(f"  machine meanwhile: steal {machine['steal_pct']:.1f} % of CPU time; an idle thread here woke up to "
          f"{machine['wake_late_max_ms']:.0f} ms late (p99.9 {machine['wake_late_p999_ms']:.1f} ms)")  # fmt: skip
    medians = {name: float(np.median(hops[name])) for name in HOPS}
    tails = {name: float(np.percentile(hops[name], 99)) for name in HOPS}
    for name in HOPS:
        print(f"  {name:<20} p50 {medians[name]:7.1f} ms  p99 {tails[name]:7.1f} ms")
        if name == "inference":
            for part in INFERENCE_PARTS:
                print(
                    f"    {part:<18} p50 {np.median(hops[part]):7.1f} ms  p99 {np.percentile(hops[part], 99):7.1f} ms"
                )
    slowest = max(medians, key=lambda n: medians[n])
    print(f"  slowest hop (p50): {slowest}")
    return {"latency_fps": fps, "latency_started_p50_ms": round(p50, 1),
            "latency_started_p95_ms": round(p95, 1), "latency_started_p99_ms": round(p99, 1),
            "latency_started_max_ms": round(float(total.max()), 1), "latency_alerts": int(total.size),
            "latency_machine": machine,
            "latency_slowest_hop": slowest,
            "latency_hops_p50_ms": {n: round(v, 1) for n, v in medians.items()},
            "latency_hops_p99_ms": {n: round(v, 1) for n, v in tails.items()}}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--cameras", type=int, default=2, help="replay cameras (the same recording each)")
    parser.add_argument("--threads", type=int, default=0, help="detect.intra_op_threads of each worker")
    parser.add_argument("--model", default="yolox_nano")
    parser.add_argument("--clip", default="TUD-Stadtmitte")
    parser.add_argument(
        "--size",
        metavar="WxH",
        help="throughput on the busy footage scaled to this size (labelled as such), e.g. 1920x1080",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="the free-running warm-up replays the clip this many times"
    )
    parser.add_argument("--rounds", type=int, default=1, help="throughput runs (interleaved with --compare)")
    parser.add_argument(
        "--pace", type=float, default=1.15, help="throughput rounds offer this times the rate the stack reached so far"
    )
    parser.add_argument(
        "--search", type=int, default=4, metavar="N", help="paced rounds of each sustained-rate search (0: none)"
    )
    parser.add_argument("--seconds", type=float, default=20.0, help="recording length of a paced round at its pace")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--compare", metavar="KEY=V1,V2", help="throughput of each value, interleaved")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--skip-idle", action="store_true")
    parser.add_argument(
        "--latency-fps",
        type=float,
        metavar="FPS",
        help="only the latency run, each camera at FPS (no throughput, alone, bare or idle runs)",
    )
    parser.add_argument(
        "--latency-repeats",
        type=int,
        default=3,
        metavar="N",
        help="the latency scene holds the clip N times (about 10 started alerts per camera each: more make p99 steadier)",
    )
    args = parser.parse_args()
    overrides = [(k, parse_value(v)) for k, v in (item.split("=", 1) for item in args.set)]
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"vigil-bench-{secrets.token_hex(3)}"
    work.mkdir(parents=True)
    receiver = Receiver()
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    bench = Bench(work, args.model, args.workers, args.threads, f"http://127.0.0.1:{receiver.server_address[1]}/hook",
                  (free_port(), free_port()), overrides, args.cameras)  # fmt: skip
    print(f"machine load: {os.getloadavg()} (1, 5, 15 min) on {os.cpu_count()} cores; other processes share them")
    first = bench.config(SHARED / "footage" / args.clip / (args.clip + ".mp4"), False, 25, False, [])
    broker = EmbeddedBroker(load(first).kafka.embedded)
    broker.start()
    bench.broker_pid = broker.status().pid or 0
    figures: dict[str, Any] = {"bench": "pipeline", "model": args.model, "workers": args.workers,
                               "cameras": args.cameras}  # fmt: skip
    try:
        if args.latency_fps:
            figures |= latency(bench, receiver, args.clip, args.latency_fps, args.cameras, args.latency_repeats)
            return emit(figures)
        pipeline_fps, last = busy_throughput(bench, args, figures)
        alone_and_bare(last, args.rounds, pipeline_fps, figures)
        if not args.skip_idle:
            idle_throughput(bench, args, pipeline_fps, figures)
        # 4. Latency at about half of capacity: the recording paced at half the measured rate.
        if not args.skip_latency:
            half = min(25.0, max(1.0, round(pipeline_fps / 2 / args.cameras)))  # per camera
            figures |= latency(bench, receiver, args.clip, half, args.cameras, args.latency_repeats)
    finally:
        broker.stop()
        receiver.shutdown()
    return emit(figures)


def busy_throughput(bench: Bench, args: argparse.Namespace, figures: dict[str, Any]) -> tuple[float, VigilConfig]:
    """1. Throughput on the busy footage: (the frames/s that count, the config of a counted round).

    A free-running replay (as fast as Kafka accepts) runs ahead of the workers: most of its frames are
    published while they load the model, so ingest's CPU falls outside the measured window and the stack
    looks bigger than it is. That round warms the broker and gives a first rate; a round paced at --pace x
    that rate measures the stack with ingest publishing throughout, and the counted rounds are paced at
    --pace x the larger of the two rates (frames offered above capacity cost ingest CPU the detections do not
    need, so its CPU is counted per frame published). Each is measured while ingest still publishes. Then
    the sustained-rate search: the highest pace the stack keeps up with, which is the figure that counts."""
    clip = read_clip(args.clip)
    if args.size:  # a larger camera: the footage upscaled (smoother than a true HD picture, so cheaper to decode)
        width, height = (int(side) for side in args.size.lower().split("x"))
        clip = [cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR) for frame in clip]
        figures["size"] = f"{width}x{height}"
    work = bench.work
    # Throughput over a few hundred frames rather than one short clip: steadier figures on a shared machine.
    busy = write_h264(work / "busy.mp4", clip * args.repeat)
    warm_up = bench.config(busy, False, 25, False, [])
    bench.run_stack(warm_up)
    free = throughput(load(warm_up), while_publishing=False)
    recordings: dict[int, Path] = {}

    def recording(camera_fps: float) -> Path:
        """The clip repeated to last --seconds at `camera_fps` (written once per length)."""
        repeats = math.ceil(camera_fps * args.seconds / len(clip))
        if repeats not in recordings:
            recordings[repeats] = write_h264(work / f"paced-{repeats}.mp4", clip * repeats)
        return recordings[repeats]

    cameras, camera_fps = pacing(args.pace * free.fps, args.cameras)
    calibration = bench.config(recording(camera_fps), True, camera_fps, False, [], cameras, camera_fps)
    bench.run_stack(calibration)
    calibrated = throughput(load(calibration))
    print(f"  free-running warm-up: {free.fps:.1f} frames/s, {free.ahead:.0%} of its frames published before "
          f"the first detections record; paced at {args.pace}x that: {calibrated.fps:.1f}", flush=True)  # fmt: skip
    # The larger of the two: a machine that drifts between rounds should not cap the counted ones at the pace.
    paced_cameras, camera_fps = pacing(args.pace * max(free.fps, calibrated.fps), args.cameras)
    paced = recording(camera_fps)
    print(f"  paced rounds: {paced_cameras} cameras at {camera_fps} frames/s each ({args.pace}x)", flush=True)
    key, values = args.compare.split("=", 1) if args.compare else ("", "")
    variants = (
        [v if key in ("tree", "layout") else parse_value(v) for v in values.split(",")] if args.compare else [None]
    )
    best: dict[int, float] = {}
    cpu_best: dict[int, float] = {}
    cpu_roles: dict[int, dict[str, float]] = {}
    last: VigilConfig | None = None
    for round_ in range(args.rounds):
        for index, value in enumerate(variants):
            extra: list[tuple[str, Any]] = [(key, value)] if args.compare and key not in ("tree", "layout") else []
            workers, tree = None, None
            if key == "layout":
                workers, threads = (int(v) for v in str(value).split("x"))
                extra = [("detect.intra_op_threads", threads)]
            elif key == "tree":
                tree = str(value)
            path = bench.config(paced, True, camera_fps, False, extra, paced_cameras, camera_fps)
            samples = bench.run_stack(path, workers, tree)
            run = throughput(load(path))
            cpu = run.cpu(samples)
            best[index] = max(best.get(index, 0.0), run.fps)
            if cpu["total"] < cpu_best.get(index, 1e9):
                cpu_best[index], cpu_roles[index] = cpu["total"], cpu
            label = f"{key}={value}" if args.compare else "defaults"
            parts = ", ".join(f"{role} {ms:.1f}" for role, ms in cpu.items() if role != "total" and ms >= 0.05)
            kept_up = " (kept up with the pace: capacity is higher)" if run.fps >= KEPT_UP * run.offered_fps else ""
            print(f"  round {round_ + 1}: {label}: {run.fps:.1f} frames/s over {len(run.records)} frames with "
                  f"{run.offered_fps:.1f} offered{kept_up}, {cpu['total']:.1f} CPU ms/frame ({parts}), model busy "
                  f"{model_busy(run.records):.0%} (load {os.getloadavg()[0]:.1f})", flush=True)  # fmt: skip
            if index == 0:
                last = load(path)
    assert last is not None
    if args.compare:
        for index, value in enumerate(variants):
            print(f"{key}={value}: {best[index]:.1f} frames/s = {best[index] / best[0]:.3f}x {key}={variants[0]}; "
                  f"{cpu_best[index]:.1f} CPU ms/frame = {cpu_best[0] / cpu_best[index]:.3f}x fewer")  # fmt: skip
        figures["compare"] = {str(v): round(best[i], 2) for i, v in enumerate(variants)}
        figures["compare_cpu_ms_per_frame"] = {str(v): round(cpu_best[i], 2) for i, v in enumerate(variants)}
        return best[0], last
    cores = os.cpu_count() or 1
    overload = best[0]
    print(f"paced at {args.pace}x: {overload:.1f} frames/s ({args.workers} worker(s), best of {args.rounds}); "
          f"{cpu_best[0]:.1f} CPU ms/frame for the whole stack and broker = {cores * 1000 / cpu_best[0] / 5:.1f} "
          f"cameras at 5 fps if it had the {cores} cores to itself")  # fmt: skip
    figures |= {"overload_fps": round(overload, 2), "cpu_ms_per_frame": round(cpu_best[0], 2),
                "cpu_ms_per_frame_by_process": {r: round(v, 2) for r, v in cpu_roles[0].items()},
                "cameras_5fps_by_cpu": round(cores * 1000 / cpu_best[0] / 5, 2)}  # fmt: skip
    if not args.search:
        return overload, last
    # Overloaded, the stack detected a rate it can sustain at least: the search starts there.
    found = sustained(bench, recording, False, overload, args.cameras, args.search, 1.08, "busy footage")
    figures["sustained_tried"] = [[round(o, 1), round(d, 1)] for o, d in found.tried]
    if found.run is None:
        print(f"sustained: no paced round kept up; the figure is the one at {args.pace}x")
        return overload, last
    cpu = found.run.cpu(found.samples)
    print(f"sustained: {found.fps:.1f} frames/s kept up with ({found.run.offered_fps:.1f} offered), "
          f"{cpu['total']:.1f} CPU ms/frame; {found.fps / overload:.3f}x the rate at {args.pace}x")  # fmt: skip
    figures |= {"sustained_fps": round(found.fps, 2), "sustained_cpu_ms_per_frame": round(cpu["total"], 2)}
    return max(found.fps, overload), last


def alone_and_bare(last: VigilConfig, rounds: int, pipeline_fps: float, figures: dict[str, Any]) -> None:
    """2. The detection function alone and the bare model on the same JPEG bytes, interleaved rounds with the
    best kept, as for the stack: a shared machine's slow moment hurts one round."""
    frames = [m.value for m in topic_records(last, last.topics.frames.name)]
    detector = Detector.from_config(last.detect)
    alone = bare = bare_cpu_fps = 0.0
    for _ in range(max(2, rounds)):
        alone = max(alone, alone_fps(detector, frames, last.detect.batch_size))
        wall, per_cpu_s = bare_fps(detector, frames)
        bare, bare_cpu_fps = max(bare, wall), max(bare_cpu_fps, per_cpu_s)
    cores = os.cpu_count() or 1
    print(f"pipeline: {pipeline_fps:.1f} frames/s; detection alone: {alone:.1f} frames/s (batch "
          f"{last.detect.batch_size}); bare session.run {bare:.1f} frames/s = {1000 / bare:.1f} ms/frame")  # fmt: skip
    print(f"pipeline / alone {pipeline_fps / alone:.3f}x (target >= 0.90), alone / bare {alone / bare:.3f}x")
    print(f"cameras at 5 fps (busy footage): {pipeline_fps / 5:.1f}; Frigate's rule 1000/{1000 / bare:.1f} ms "
          f"/ 5 = {bare / 5:.1f} cameras; {pipeline_fps / bare:.3f}x the rule")  # fmt: skip
    figures |= {"pipeline_fps": round(pipeline_fps, 2), "alone_fps": round(alone, 2), "bare_fps": round(bare, 2),
                "pipeline_vs_alone": round(pipeline_fps / alone, 3), "cameras_5fps": round(pipeline_fps / 5, 2),
                "frigate_rule_cameras": round(bare / 5, 2),
                "frigate_rule_cameras_by_cpu": round(cores * bare_cpu_fps / 5, 2),
                "cameras_vs_frigate_rule": round(pipeline_fps / bare, 3)}  # fmt: skip


def idle_throughput(bench: Bench, args: argparse.Namespace, busy_fps: float, figures: dict[str, Any]) -> None:
    """3. A scene idle 80 % of the time, motion gating on, still frames reusing the last detections: the
    sustained-rate search from the busy footage's rate up (the idle scene holds the same busy stretches)."""
    scene = idle_scene(bench.work / "idle80.mp4")
    found = sustained(bench, lambda _fps: scene, True, busy_fps, args.cameras, max(args.search, 1) + 1, 1.3,
                      "idle 80 % scene")  # fmt: skip
    figures["idle80_tried"] = [[round(o, 1), round(d, 1)] for o, d in found.tried]
    if found.run is None:
        print("idle 80 % scene: no paced round kept up")
        return
    cores = os.cpu_count() or 1
    idle_fps, records = found.fps, found.run.records
    idle_cpu = found.run.cpu(found.samples)["total"]
    reused = sum(r.reused_from is not None for r in records)
    print(f"idle 80 % scene (labelled as such): {idle_fps:.1f} frames/s kept up with = {idle_fps / 5:.1f} cameras "
          f"at 5 fps; {idle_cpu:.1f} CPU ms/frame = {cores * 1000 / idle_cpu / 5:.1f} cameras with the cores to "
          f"itself; {reused}/{len(records)} frames reused the last detections")  # fmt: skip
    figures |= {"idle80_pipeline_fps": round(idle_fps, 2), "idle80_cameras_5fps": round(idle_fps / 5, 2),
                "idle80_cpu_ms_per_frame": round(idle_cpu, 2),
                "idle80_cameras_5fps_by_cpu": round(cores * 1000 / idle_cpu / 5, 2),
                "idle80_reused_share": round(reused / max(1, len(records)), 3)}  # fmt: skip


def emit(figures: dict[str, Any]) -> int:
    figures["load_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
