"""`vigil detect` (the worker) and `vigil predict` (images on demand, same `Detector`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from pathlib import Path

from detect.detector import Detector
from detect.results import detections_json
from vigil.errors import ContractError
from vigil.imaging import decode_image
from vigil.settings import resolve_config
from vigil.signals import stop_on_signals

log = logging.getLogger(__name__)


def detect_main(args: argparse.Namespace) -> int:
    from detect.worker import DetectWorker
    from vigil.health import Health
    from vigil.kafka import ensure_topics, make_consumer, make_producer
    from vigil.metrics_server import serve_process_metrics

    config = resolve_config(args.config, args.log_level)
    health = Health()
    server = serve_process_metrics(config.metrics, health, getattr(args, "metrics_port", None))
    health.set("model", False, f"loading {config.detect.model}")
    health.set("kafka", False, "connecting")
    detector = Detector.from_config(config.detect)
    health.set("model", True, f"{detector.manifest.name} on {detector.provider}")
    log.info(
        "model %s (%s, %s, batch %s) on %s",
        detector.manifest.name, detector.manifest.family, detector.manifest.version,
        detector.fixed_batch or "dynamic", detector.provider,
    )  # fmt: skip
    ensure_topics(
        config.kafka, [config.topics.frames, config.topics.detections, config.topics.dead_letter], config.topics
    )
    stop = threading.Event()
    consumer = make_consumer(config.kafka, "detect", config.detect.group_id)
    producer = make_producer(config.kafka, "detect")
    health.set("kafka", True, "consumer and producer connected")
    try:
        worker = DetectWorker(config, detector, consumer, producer)
        worker.subscribe()
        with stop_on_signals(stop, "finishing the current batch and committing"):
            worker.run(stop)
    finally:
        consumer.close(autocommit=False)
        producer.close()
        server.stop()
    return 0


def predict_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    detector = Detector.from_config(config.detect, args.model, args.conf, args.iou)
    failed = 0
    batch_size = config.detect.batch_size
    paths = [Path(p) for p in args.images]
    for start in range(0, len(paths), batch_size):
        chunk, images = [], []
        for path in paths[start : start + batch_size]:
            try:
                images.append(decode_image(path.read_bytes(), config.detect.max_pixels))
                chunk.append(path)
            except (OSError, ContractError) as exc:
                print(f"vigil predict: {path}: {exc}", file=sys.stderr)
                failed += 1
        for path, image, detections in zip(chunk, images, detector(images), strict=True):
            names = detector.names_of(detections)
            if args.json:
                print(json.dumps(detections_json(detector, image, detections, str(path))))
            else:
                print(f"{path}: {image.shape[1]}x{image.shape[0]}, {len(detections)} detections")
                for box, name, score in zip(detections.xyxy, names, detections.confidence, strict=True):
                    x1, y1, x2, y2 = (round(float(v), 1) for v in box)
                    print(f"  {name:<14} {float(score):.2f}  [{x1}, {y1}, {x2}, {y2}]")
    return 1 if failed else 0


def serve_main(args: argparse.Namespace) -> int:
    """`vigil serve`: the on-demand detection API, protected by `detect.http.token`."""
    from detect.http_api import DetectionApi
    from vigil.health import Health
    from vigil.metrics_server import serve_process_metrics

    config = resolve_config(args.config, args.log_level)
    health = Health()
    metrics = serve_process_metrics(config.metrics, health, getattr(args, "metrics_port", None))
    detector = Detector.from_config(config.detect)
    health.set("model", True, f"{detector.manifest.name} on {detector.provider}")
    api = DetectionApi(detector, config.detect)
    api.start()
    stop = threading.Event()
    print(f"detection API on {api.url}/v1/detect (bearer token from detect.http.token)", file=sys.stderr, flush=True)
    with stop_on_signals(stop, "answering requests in flight"):
        stop.wait()
    api.stop()
    metrics.stop()
    return 0
