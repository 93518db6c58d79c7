"""`vigil detect` (the worker) and `vigil predict` (images on demand, same `Detector`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from detect.detector import Detector
from detect.results import detections_json
from vigil.detections import Detections
from vigil.draw import detection_labels, draw_boxes
from vigil.errors import ContractError, VigilError
from vigil.imaging import decode_image, encode_jpeg
from vigil.settings import resolve_config
from vigil.signals import stop_on_signals

if TYPE_CHECKING:
    from kafka import KafkaConsumer

    from vigil.config import VigilConfig

log = logging.getLogger(__name__)


# How long a stopping worker waits for its last sends (heartbeats, a batch it did not commit).
_CLOSE_TIMEOUT_S = 10.0


def frames_consumer(config: VigilConfig) -> KafkaConsumer:
    """A worker's consumer in `detect.group_id` (subscribed by the worker), with `detect.fetch_wait_ms`'s
    fetch window."""
    from vigil.kafka import gathering_fetches, make_consumer

    fetches = gathering_fetches(config.kafka, config.detect.fetch_wait_ms)
    return make_consumer(config.kafka, "detect", config.detect.group_id, (), **fetches)


def detect_main(args: argparse.Namespace) -> int:
    from detect.worker import DetectWorker
    from vigil.health import Health
    from vigil.heartbeat import Heartbeat
    from vigil.kafka import ensure_topics, make_producer, wait_for_kafka
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
    topics = config.topics

    def connect() -> tuple[Any, Any]:
        ensure_topics(config.kafka, [topics.frames, topics.detections, topics.dead_letter, topics.status], topics)
        consumer = frames_consumer(config)
        try:
            # Not idempotent, one request in flight (order kept without it): kafka-python 3.0's
            # idempotent producer stops sending for good once it expires a batch that was in flight
            # when the broker died, and `Deliveries` re-sends what expired. The worker waits for
            # every batch's acknowledgements anyway, so more requests in flight would gain little.
            return consumer, make_producer(
                config.kafka, "detect", enable_idempotence=False, max_in_flight_requests_per_connection=1
            )
        except BaseException:
            consumer.close(autocommit=False)
            raise

    stop = threading.Event()
    with stop_on_signals(stop, "giving up waiting for Kafka"):
        clients = wait_for_kafka(config.kafka, connect, stop, what="detect", health=health)
    if clients is None:
        server.stop()
        return 0
    consumer, producer = clients
    health.set("kafka", True, "consumer and producer connected")
    heartbeat: Heartbeat | None = None
    try:
        worker = DetectWorker(config, detector, consumer, producer)
        heartbeat = Heartbeat(producer, topics.status.name, "detect", health, totals=worker.totals).start()
        worker.subscribe()
        with stop_on_signals(stop, "finishing the current batch and committing"):
            worker.run(stop)
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        consumer.close(autocommit=False)
        # Bounded: stopped during an outage, what is not acknowledged was not committed either.
        producer.close(timeout=_CLOSE_TIMEOUT_S)
        server.stop()
    return 0


def predict_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    detector = Detector.from_config(config.detect, args.model, args.conf, args.iou)
    save = Annotated(Path(args.save)) if getattr(args, "save", None) else None
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
            if save is not None:
                save.write(path, image, detections, names)
            if args.json:
                print(json.dumps(detections_json(detector, image, detections, str(path))))
            else:
                print(f"{path}: {image.shape[1]}x{image.shape[0]}, {len(detections)} detections")
                for box, name, score in zip(detections.xyxy, names, detections.confidence, strict=True):
                    x1, y1, x2, y2 = (round(float(v), 1) for v in box)
                    print(f"  {name:<14} {float(score):.2f}  [{x1}, {y1}, {x2}, {y2}]")
    if save is not None:
        print(f"vigil predict: {len(save.written)} annotated image(s) in {save.folder}", file=sys.stderr)
    return 1 if failed else 0


class Annotated:
    """`vigil predict --save DIR`: each image with its boxes, labels and scores drawn (as
    ultralytics' `save=True` does), as DIR/<name>.jpg; names that repeat get -2, -3, ..."""

    def __init__(self, folder: Path) -> None:
        if folder.exists() and not folder.is_dir():
            raise VigilError(f"--save {folder}: exists and is not a folder; give a folder to write images into")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.written: list[Path] = []

    def write(self, source: Path, image: npt.NDArray[np.uint8], detections: Detections, names: Sequence[str]) -> Path:
        canvas = image.copy()
        labels = detection_labels(names, detections.confidence)
        draw_boxes(canvas, detections.xyxy, labels, detections.class_id)
        target = self.folder / f"{source.stem}.jpg"
        n = 1
        while target in self.written:
            n += 1
            target = self.folder / f"{source.stem}-{n}.jpg"
        target.write_bytes(encode_jpeg(canvas, 95))
        self.written.append(target)
        return target


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
