from __future__ import annotations

import logging

import pytest

from vigil.config.loader import parse_config
from vigil.logs import config_secrets
from vigil.redact import SecretFilter, redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5/s1", "rtsp://10.0.0.5/s1"),
        ("rtsp://token@cam/s", "rtsp://***@cam/s"),
        ("https://hooks.example/x?token=abc&b=1", "https://hooks.example/x?token=***&b=1"),
        ("/videos/a.mp4", "/videos/a.mp4"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_urls_and_known_secrets() -> None:
    text = "open rtsp://u:p4ss@h/s failed; key whsec_abcdef"
    assert redact_text(text, ["whsec_abcdef"]) == "open rtsp://u:***@h/s failed; key ***"


def test_secret_filter_on_a_real_logger(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config(
        """
cameras:
  - id: a
    url: rtsp://viewer:cam-pass-123@h/s
kafka:
  security_protocol: SASL_SSL
  sasl_mechanism: PLAIN
  sasl_username: u
  sasl_password: sasl-pass-456
""",
        "t.yaml",
        {},
    )
    secrets = config_secrets(config)
    assert "cam-pass-123" in secrets and "sasl-pass-456" in secrets
    logger = logging.getLogger("vigil.test.redact")
    handler_filter = SecretFilter(secrets)
    caplog.handler.addFilter(handler_filter)
    try:
        logger.warning("sasl password is %s", "sasl-pass-456")
        logger.warning("camera rtsp://viewer:cam-pass-123@h/s down")
        try:
            raise RuntimeError("failed with cam-pass-123")
        except RuntimeError:
            logger.exception("boom")
    finally:
        caplog.handler.removeFilter(handler_filter)
    text = caplog.text
    assert "sasl-pass-456" not in text and "cam-pass-123" not in text
    assert "rtsp://viewer:***@h/s" in text
