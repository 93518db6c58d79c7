"""`GET /api/system` from real heartbeats (`vigil.heartbeat.Heartbeat`) on the test broker's status
topic: every process, a restarted process's predecessor not left behind as "gone", and webhook
delivery per endpoint from the alerts process that is running, not from one that stopped."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import VIEWER_TOKEN, wait_for, web_config
from vigil.config import VigilConfig
from vigil.health import Health
from vigil.heartbeat import Heartbeat
from vigil.kafka import ensure_topics, make_producer

pytestmark = pytest.mark.broker


def beating(producer: Any, config: VigilConfig, stage: Any, name: str, health: Health, **totals: float) -> Heartbeat:
    beat = Heartbeat(producer, config.topics.status.name, stage, health, totals=lambda: totals, interval_s=1.0)
    beat.process = f"{stage}@{beat.process.split('@')[1].split(':')[0]}:{name}"  # one test process plays several
    return beat


def test_system_shows_running_processes_and_webhooks_of_the_running_alerts(
    web_factory: Any, vigil_config: VigilConfig, tmp_path: Path, password_hashes: dict[str, str]
) -> None:
    data = web_config(vigil_config, tmp_path, password_hashes).model_dump(mode="python")
    data["web"] = {**data["web"], "users": [], "tokens": [{"name": "v", "role": "viewer", "token": VIEWER_TOKEN}],
                   "media_key": "k" * 40}  # fmt: skip
    data["alerts"]["webhooks"] = [{"name": "sink", "url": "http://127.0.0.1:9/hook", "secrets": ["whsec_" + "A" * 32]}]
    config = VigilConfig.model_validate(data)
    ensure_topics(config.kafka, config.topics)
    producer = make_producer(config.kafka, "test-beats")
    try:
        # An alerts process that delivered, then stopped (its last beat says webhook:sink "stopped") ...
        old_health = Health()
        old_health.set("webhook:sink", True, "delivering to http://127.0.0.1:9")
        old = beating(producer, config, "alerts", "1001", old_health, **{"delivered.sink": 5.0}).start()
        time.sleep(1.5)
        old_health.set("webhook:sink", False, "stopped")
        old.stop()
        # ... and the one its supervisor started in its place, delivering.
        health = Health()
        health.set("webhook:sink", True, "delivering to http://127.0.0.1:9")
        alerts = beating(producer, config, "alerts", "1002", health, alerts_fired=7.0, **{"delivered.sink": 7.0})
        detect_health = Health()
        detect_health.set("model", True, "yolox_nano on CPUExecutionProvider")
        detect = beating(producer, config, "detect", "1003", detect_health, frames_detected=40.0, batches=20.0,
                         inference_ms=2000.0)  # fmt: skip
        alerts.start()
        detect.start()
        web = web_factory(config)
        client = web.client(VIEWER_TOKEN)

        def settled() -> dict[str, Any] | None:
            system = client.get("/api/system").json()
            names = {p["process"] for p in system["processes"]}
            return system if {alerts.process, detect.process} <= names else None

        system = wait_for(settled, timeout_s=30, what="both heartbeats in /api/system")
        processes = {p["process"]: p for p in system["processes"]}
        # The stopped alerts process was replaced by a later one on the same host: not listed.
        assert old.process not in processes, sorted(processes)
        assert processes[alerts.process]["ready"] and not processes[alerts.process]["gone"]
        assert processes[detect.process]["stats"]["frames_detected"] == 40.0
        hook = next(h for h in system["webhooks"] if h["name"] == "sink")
        assert hook["state"] == "ok", hook
        assert hook["detail"] == "delivering to http://127.0.0.1:9" and hook["processes"] == [alerts.process]
        assert hook["delivered"] == 7
        # The running one stops too: its endpoint is not "ok" any more, and says why.
        health.set("webhook:sink", False, "stopped")
        alerts.stop()

        def sink_not_ok() -> dict[str, Any] | None:
            found = next(h for h in client.get("/api/system").json()["webhooks"] if h["name"] == "sink")
            return found if found["state"] != "ok" else None

        gone = wait_for(sink_not_ok, timeout_s=20, what="the endpoint not ok after its alerts process stopped")
        assert gone["state"] == "unknown" and "no heartbeat from an alerts process" in gone["detail"], gone
        detect.stop()
    finally:
        producer.close(timeout=5)
