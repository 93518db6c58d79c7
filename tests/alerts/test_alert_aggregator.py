"""`vigil alerts` end to end: real broker, real receiver, the console script as a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest
from alerts_helpers import alert, alerts_config, camera, record, walk
from alerts_receiver import Receiver
from kafka import KafkaProducer

from alerts.engine import AlertEngine
from vigil.config import VigilConfig
from vigil.config.loader import parse_config
from vigil.errors import ConfigError
from vigil.kafka import ensure_topics

VIGIL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "vigil"
CAM_PASSWORD = "campass-s3cret"


def yaml_config(base: VigilConfig, receiver: Receiver) -> str:
    t = base.topics
    return textwrap.dedent(f"""\
        kafka:
          bootstrap_servers: [{base.kafka.bootstrap_servers[0]}]
        topics:
          frames: {{name: {t.frames.name}, partitions: 1}}
          detections: {{name: {t.detections.name}, partitions: 2}}
          alerts: {{name: {t.alerts.name}, partitions: 1}}
          dead_letter: {{name: {t.dead_letter.name}, partitions: 1}}
          status: {{name: {t.status.name}, partitions: 1}}
        cameras:
          - id: cam1
            url: rtsp://admin:{CAM_PASSWORD}@cam/stream
            zones:
              - name: door
                polygon: [[200, 200], [400, 200], [400, 400], [200, 400]]
        alerts:
          group_id: {base.alerts.group_id}
          tracker: {{min_hits: 2, lost_after_s: 1.0}}
          rules:
            - name: door
              zone: door
              min_frames: 3
              end_after_s: 1.0
              cooldown_s: 5.0
          webhooks:
            - name: rx
              url: {receiver.url}
              secrets: [{receiver.secret}]
              initial_backoff_s: 0.05
              max_backoff_s: 0.5
        metrics: {{enabled: false}}
        log_level: DEBUG
        """)


def stream(people: int) -> list[bytes]:
    """People walking through the door zone one after another, 40 frames each plus 10 empty."""
    frames: list[list[tuple[float, float, float, float]]] = []
    for _ in range(people):
        frames += [[box] for box in walk(0, 600, 40, y=250)] + [[]] * 10
    return [record(i, boxes).to_bytes() for i, boxes in enumerate(frames)]


def expected_ids(records: list[bytes]) -> set[str]:
    from vigil.contracts import DetectionsRecord

    config = alerts_config(min_frames=3, end_after_s=1.0, cooldown_s=5.0)
    engine = AlertEngine(config, [camera()])
    return {a.webhook_id for value in records for a in engine.process(DetectionsRecord.from_bytes(value), 0)}


def send(config: VigilConfig, values: list[bytes]) -> None:
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
    for value in values:
        producer.send(config.topics.detections.name, key=b"cam1", value=value)
    producer.flush()
    producer.close()


def start(path: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(VIGIL), "alerts", "--config", str(path)], stdout=subprocess.DEVNULL, stderr=log.open("ab")
    )


@pytest.mark.broker
@pytest.mark.timeout(240)
def test_sigkill_and_restart_loses_nothing_fires_nothing_twice(
    vigil_config: VigilConfig, alerts_receiver: Receiver, tmp_path: Path
) -> None:
    alerts_receiver.start()
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml_config(vigil_config, alerts_receiver))
    ensure_topics(vigil_config.kafka, parse_config(path.read_text(), str(path), os.environ).topics)
    records = stream(4)
    expected = expected_ids(records)
    assert len(expected) == 8  # four people, each one started and one ended
    log = tmp_path / "alerts.log"

    # Phase 1: two people and the third one half-way (their alert open), plus a malformed record.
    send(vigil_config, records[:100] + [b'{"schema": 1, "camera": 7}'] + records[100:120])
    first = start(path, log)
    try:
        acked = alerts_receiver.wait_for(5, 60)
        assert len(acked) == 5, log.read_text()[-3000:]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

    # Phase 2: the rest arrives while the aggregator is dead; a fresh one takes over.
    send(vigil_config, records[120:])
    second = start(path, log)
    try:
        # A redelivery after the SIGKILL is allowed: wait for every distinct event, not for 8 posts.
        acked = alerts_receiver.wait_for(8, 90, distinct=True)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
    stderr = log.read_text()
    assert set(acked) == expected, stderr[-3000:]  # nothing lost, and any repeat carried the same id
    assert all(d.verified for d in alerts_receiver.deliveries)
    by_alert: dict[str, set[str]] = {}
    for webhook_id in acked:
        alert_id, event = webhook_id.split(".", 1)
        by_alert.setdefault(alert_id, set()).add(event)
    assert all(events == {"started", "ended"} for events in by_alert.values())
    assert "malformed detections record" in stderr  # dead-lettered, and the aggregator kept going
    for secret in (alerts_receiver.secret, "sekrit-token-123", CAM_PASSWORD):
        assert secret not in stderr


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_log_shows_only_the_endpoint_of_a_webhook_url(
    vigil_config: VigilConfig, alerts_receiver: Receiver, tmp_path: Path
) -> None:
    """Slack-style URLs carry their token in the path: `vigil alerts` logs scheme://host:port only,
    also in retry warnings and dead-letter reasons (here a redirect to another tokenised URL)."""
    alerts_receiver.path = "/services/T000/B000/PathTokenXYZ"
    alerts_receiver.start()
    endpoint = f"http://127.0.0.1:{alerts_receiver.port}"
    moved = f"{endpoint}/services/T000/B000/NewTokenXYZ"
    alerts_receiver.responses.extend([(503, {}, b"busy"), (302, {"Location": moved}, b"")])
    path = tmp_path / "vigil.yaml"
    path.write_text(yaml_config(vigil_config, alerts_receiver))
    ensure_topics(vigil_config.kafka, parse_config(path.read_text(), str(path), os.environ).topics)
    producer = KafkaProducer(bootstrap_servers=vigil_config.kafka.bootstrap_servers)
    for n in (1, 2):
        producer.send(vigil_config.topics.alerts.name, key=b"cam1", value=alert(n).to_bytes())
    producer.flush()
    producer.close()
    log = tmp_path / "alerts.log"
    process = start(path, log)
    try:
        acked = alerts_receiver.wait_for(1, 60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    text = log.read_text()
    assert acked == ["al_0002.started"], text[-3000:]
    assert f"delivering to {endpoint} as group" in text
    assert f"endpoint redirected to {endpoint}; configure the final URL" in text
    assert "PathTokenXYZ" not in text and "NewTokenXYZ" not in text


BASE = """\
cameras:
  - id: cam1
    url: rtsp://cam/stream
    zones:
      - name: door
        polygon: {polygon}
alerts:
  rules:
    - name: r1
      zone: {zone}
      classes: [{cls}]
"""


@pytest.mark.parametrize(
    ("polygon", "zone", "cls", "key", "line"),
    [
        ("[[0, 0], [10, 10]]", "door", "person", "cameras[0].zones[0].polygon", 6),
        ("[[0, 0], [10, 0], [10, 10]]", "door", "unicorn", "alerts.rules[0].classes[0]", 11),
        ("[[0, 0], [10, 0], [10, 10]]", "garage", "person", "alerts.rules[0].zone", 10),
    ],
)
def test_invalid_rules_refused_with_key_and_line(polygon: str, zone: str, cls: str, key: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE.format(polygon=polygon, zone=zone, cls=cls), "vigil.yaml", {})
    assert any(issue.key == key and issue.line == line for issue in info.value.issues), str(info.value)
    assert f"line {line}: {key}" in str(info.value)
