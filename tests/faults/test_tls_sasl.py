"""TLS and SASL for real: the embedded broker with a SASL_SSL listener (SCRAM-SHA-512 users made at
format time, a CA and broker certificate made for the test), the whole pipeline connected through
it, a wrong password and an untrusted certificate refused at start naming the config key, and no
password in any process's output or the broker's log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stack import Receiver, Stack, losses, stack_config, webhook_secret
from tls import SCRAM_USERS, Pki, make_pki

from vigil.broker import EmbeddedBroker

pytestmark = [pytest.mark.broker, pytest.mark.cluster]
PASSWORD = SCRAM_USERS["vigil"]


def secure_kafka(broker: EmbeddedBroker, cafile: Path) -> dict[str, object]:
    return {
        "bootstrap_servers": [broker.bootstrap],
        "bootstrap_timeout_ms": 5000,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": "vigil",
        "sasl_password": "${VIGIL_TEST_KAFKA_PASSWORD}",
        "ssl_cafile": str(cafile),
    }


@pytest.mark.timeout(600)
def test_pipeline_through_sasl_ssl(
    tls_broker: EmbeddedBroker, pki: Pki, tmp_path: Path, shared_data: Path, unique_name: str
) -> None:
    secret = webhook_secret()
    receiver = Receiver(secret)
    video = shared_data / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
    config_path = stack_config(
        tmp_path, unique_name, secure_kafka(tls_broker, pki.ca_pem), receiver, video=video, loop=False
    )
    env = {"TEST_WEBHOOK_SECRET": secret, "VIGIL_TEST_KAFKA_PASSWORD": PASSWORD}
    # INFO from every child: the most a process says, and none of it may carry the password.
    stack = Stack.up(config_path, tmp_path, env, "--exit-when-done", "--child-log-level", "INFO")
    try:
        code = stack.wait(400)
    finally:
        stack.kill()
        receiver.shutdown()
    log = "".join(stack.log)
    assert code == 0, stack.tail()
    assert "every frame processed, every alert ended and delivered" in log
    lost = losses(stack.config, receiver)
    print(f"through SASL_SSL: {lost.frames} frames, {len(lost.undetected)} undetected, {lost.alerts} alert events")
    assert lost.frames > 0 and lost.undetected == []
    assert lost.alerts > 0 and lost.undelivered == []
    for password in SCRAM_USERS.values():
        assert password not in log
        assert password not in tls_broker.log_file.read_text()


def refused(tmp_path: Path, kafka: dict[str, object], password: str) -> str:
    """`vigil topics` with this kafka section: it must fail at start; returns its output."""
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump({"kafka": kafka}))
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "topics", "--config", str(path)],
        env=os.environ | {"VIGIL_TEST_KAFKA_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.timeout(300)
def test_wrong_password_is_refused_naming_the_key(tls_broker: EmbeddedBroker, pki: Pki, tmp_path: Path) -> None:
    wrong = "not-the-Pw-4711"
    output = refused(tmp_path, secure_kafka(tls_broker, pki.ca_pem), wrong)
    assert "kafka.sasl_password" in output and "'vigil'" in output, output
    assert wrong not in output and PASSWORD not in output


@pytest.mark.timeout(300)
def test_untrusted_certificate_is_refused_naming_the_key(tls_broker: EmbeddedBroker, tmp_path: Path) -> None:
    stranger = make_pki(tmp_path / "other", "stranger")  # a CA that never signed the broker's certificate
    output = refused(tmp_path, secure_kafka(tls_broker, stranger.ca_pem), PASSWORD)
    assert "kafka.ssl_cafile" in output and "does not trust" in output, output
    assert PASSWORD not in output
