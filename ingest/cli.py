"""`vigil ingest` (live cameras from the config) and `vigil replay` (one recording as a camera).

FFmpeg options: each RTSP open sets ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` to
``rtsp_transport;<tcp|udp>|fflags;nobuffer|flags;low_delay`` for the duration of the open (see
`ingest.sources`); a value exported by the operator is restored afterwards and used by replays.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from typing import Any

from ingest.metrics import default_metrics
from ingest.publisher import frames_linger, freshness_budget_s, live_producer_options
from ingest.runner import IngestRunner
from vigil.config import CameraConfig, VigilConfig
from vigil.errors import ConfigError, ConfigIssue
from vigil.health import Health, camera_detail
from vigil.heartbeat import Heartbeat
from vigil.kafka import ensure_topics, make_producer, wait_for_kafka
from vigil.metrics_server import serve_process_metrics
from vigil.settings import resolve_config
from vigil.signals import stop_on_signals

log = logging.getLogger(__name__)
STATS_EVERY_S = 30.0


def _select_cameras(config: VigilConfig, wanted: list[str] | None, source: str) -> list[CameraConfig]:
    known = [c.id for c in config.cameras]
    if wanted:
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise ConfigError(source, [ConfigIssue("cameras", f"--camera {unknown} not in the config; known: {known}")])
        return [c for c in config.cameras if c.id in wanted]
    cameras = [c for c in config.cameras if c.enabled]
    if not cameras:
        raise ConfigError(source, [ConfigIssue("cameras", "no enabled camera to ingest; add one under cameras:")])
    return cameras


def ingest_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    cameras = _select_cameras(config, args.camera, args.config)
    health = Health()
    server = serve_process_metrics(config.metrics, health, getattr(args, "metrics_port", None))
    health.set("kafka", False, "connecting")
    # Live frames get a delivery timeout within their freshness budget (stuck in an outage, they
    # would arrive too old to detect); a fast replay in the same process must lose nothing, so
    # then the configured timeouts stay.
    lossless = any(c.kind == "replay" and not c.replay.realtime for c in cameras)

    def connect() -> Any:
        ensure_topics(config.kafka, config.topics)
        return make_producer(
            config.kafka, "ingest", **(frames_linger(config) if lossless else live_producer_options(config))
        )

    waiting = threading.Event()
    with stop_on_signals(waiting, "giving up waiting for Kafka"):
        producer = wait_for_kafka(config.kafka, connect, waiting, what="ingest", health=health)
    if producer is None:
        server.stop()
        return 0
    health.set("kafka", True, "producer connected")
    runner = IngestRunner(
        cameras, producer, config.topics.frames.name, default_metrics(), freshness_s=freshness_budget_s(config)
    )
    heartbeat = Heartbeat(
        producer, config.topics.status.name, "ingest", health, totals=runner.totals, cameras=runner.camera_states
    )
    log.info("ingesting %d camera(s) to %s: %s", len(cameras), config.topics.frames.name, [c.id for c in cameras])
    try:
        with stop_on_signals(runner.stop_event, "flushing queued frames"):
            runner.start()
            heartbeat.start()
            next_stats = time.monotonic() + STATS_EVERY_S
            seen: list[tuple[str, str, int]] = []
            # Live cameras run until a signal; when every camera is a recording that has ended,
            # ingest is done and exits by itself.
            while not runner.stop_event.wait(1.0) and runner.running():
                seen = _report_cameras(runner, health, heartbeat, seen)
                for stats in runner.stats():  # refreshes the last-frame-age gauges every second
                    if time.monotonic() >= next_stats:
                        log.info("%s", stats.line())
                if time.monotonic() >= next_stats:
                    next_stats += STATS_EVERY_S
        final = runner.stop()
        _report_cameras(runner, health, heartbeat, seen)
        heartbeat.stop()
        producer.close(timeout=10)
        for stats in final:
            log.info("final: %s", stats.line())
    finally:
        server.stop()
    failed = [stats.camera_id for stats in final if stats.state == "failed"]
    if failed:
        # A supervisor (systemd, Kubernetes) must see that cameras were lost, not a clean exit.
        log.error("%d of %d camera(s) ended failed: %s (see their last error above)", len(failed), len(final), failed)
        return 1
    return 0


def _report_cameras(
    runner: IngestRunner, health: Health, heartbeat: Heartbeat, seen: list[tuple[str, str, int]]
) -> list[tuple[str, str, int]]:
    """Each camera's words on /readyz, and a heartbeat at once when a camera's state or try changed
    (so "reconnecting" reaches the status topic within a second, not at the next beat)."""
    states = runner.camera_states()
    for state in states:
        health.set(f"camera:{state.camera_id}", state.state in ("streaming", "ended"), camera_detail(state))
    now: list[tuple[str, str, int]] = [(s.camera_id, s.state, s.attempt) for s in states]
    if now != seen:
        heartbeat.beat()
    return now


def replay_camera(config: VigilConfig, args: argparse.Namespace) -> CameraConfig:
    """The camera to replay as: its config entry if the id is known (motion, size, quality),
    else defaults; the file and the replay flags given on the command line win."""
    base = config.camera(args.camera)
    data: dict[str, Any] = base.model_dump() if base is not None else {"id": args.camera}
    replay = dict(data.get("replay") or {})
    if args.realtime is not None:
        replay["realtime"] = args.realtime
    if args.source_fps is not None:
        replay["source_fps"] = args.source_fps
    if args.loop:
        replay["loop"] = True
    if args.start_frame is not None:  # else the camera's configured replay.start_frame stays
        replay["start_frame"] = args.start_frame
    if args.end_frame is not None:
        replay["end_frame"] = args.end_frame
    data.update(url=args.file, kind="replay", replay=replay, enabled=True)
    try:
        return CameraConfig.model_validate(data)
    except ValueError as exc:  # pydantic.ValidationError is a ValueError
        raise ConfigError("vigil replay arguments", [ConfigIssue("replay", str(exc))]) from exc


def replay_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    camera = replay_camera(config, args)
    ensure_topics(config.kafka, config.topics)
    producer = make_producer(config.kafka, "replay", **frames_linger(config))
    runner = IngestRunner(
        [camera], producer, config.topics.frames.name, default_metrics(), lossless=True, sample_fps=args.fps
    )
    source = runner.workers[0].source
    started = time.monotonic()
    with stop_on_signals(runner.stop_event, "flushing queued frames"):
        runner.start()
        while runner.running() and not runner.stop_event.is_set():
            runner.wait(timeout=1.0)
            _progress(runner, source, started)
    stats = runner.stop()[0]
    producer.close(timeout=10)
    _progress(runner, source, started)
    print(file=sys.stderr)
    print(stats.line())
    if stats.state == "failed":
        return 2
    return 1 if stats.delivery_failures else 0


def _progress(runner: IngestRunner, source: Any, started: float) -> None:
    stats = runner.stats()[0]
    total = getattr(source, "total_frames", None)
    elapsed = max(1e-6, time.monotonic() - started)
    of = f"/{total}" if total and not getattr(source, "loop", False) else ""
    sys.stderr.write(
        f"\r{stats.camera_id}: read {stats.read}{of} frames, published {stats.published}, "
        f"{stats.read / elapsed:.1f} fps, {elapsed:.1f}s   "
    )
    sys.stderr.flush()
