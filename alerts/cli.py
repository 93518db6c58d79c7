"""`vigil alerts`: the aggregator plus one delivery thread per webhook endpoint, in one process."""

from __future__ import annotations

import argparse
import base64
import logging
import secrets
import threading

from kafka import KafkaProducer

from alerts.aggregator import Aggregator
from alerts.webhooks import EndpointDeliverer
from vigil.config import VigilConfig
from vigil.health import Health
from vigil.heartbeat import Heartbeat
from vigil.kafka import ensure_topics, make_producer, wait_for_kafka
from vigil.metrics_server import serve_process_metrics
from vigil.settings import resolve_config
from vigil.signals import guarded, stop_on_signals

log = logging.getLogger("alerts")


def new_secret(nbytes: int = 32) -> str:
    """A Standard Webhooks signing secret: 'whsec_' + base64 of `nbytes` random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(nbytes)).decode()


def _connect(config: VigilConfig) -> KafkaProducer:
    ensure_topics(config.kafka, config.topics)
    return make_producer(config.kafka, "alerts-status")


def alerts_main(args: argparse.Namespace) -> int:
    if getattr(args, "new_secret", False):
        print(new_secret())
        return 0
    config = resolve_config(args.config, getattr(args, "log_level", None))
    health = Health()
    server = serve_process_metrics(config.metrics, health, getattr(args, "metrics_port", None))
    health.set("kafka", False, "connecting")
    stop = threading.Event()
    with stop_on_signals(stop, "giving up waiting for Kafka"):
        status_producer = wait_for_kafka(config.kafka, lambda: _connect(config), stop, what="alerts", health=health)
    if status_producer is None:
        server.stop()
        return 0
    health.set("kafka", True, "topics ready")

    failures: list[str] = []
    threads = []
    deliverers: list[EndpointDeliverer] = []
    for hook in config.alerts.webhooks:
        # Not ready until the deliverer's consumer is up; a deliverer that exits marks itself not ready.
        deliverer = EndpointDeliverer(config, hook, stop, health=health)
        health.set(deliverer.health_name, False, "starting")
        deliverers.append(deliverer)
        threads.append(
            threading.Thread(
                target=guarded(f"webhook {hook.name}", deliverer.run, stop, failures, log),
                name=f"webhook-{hook.name}",
                daemon=True,
            )
        )
    for thread in threads:
        thread.start()
    log.info("alerts: %d rule(s), %d webhook endpoint(s)", len(config.alerts.rules), len(threads))
    aggregator = Aggregator(config, stop)

    def totals() -> dict[str, float]:
        figures = {"alerts_fired": float(aggregator.published)}
        figures.update({f"delivered.{d.name}": float(d.delivered) for d in deliverers})
        figures["delivered"] = float(sum(d.delivered for d in deliverers))
        return figures

    heartbeat = Heartbeat(status_producer, config.topics.status.name, "alerts", health, totals=totals).start()
    with stop_on_signals(stop, "publishing and committing the current batch"):
        guarded("aggregator", aggregator.run, stop, failures, log)()
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    heartbeat.stop()
    status_producer.close(timeout=5)
    log.info("alerts: stopped (%d alert events published)", aggregator.published)
    server.stop()
    return 1 if failures else 0
