from __future__ import annotations

import logging

import pytest

from vigil.config.loader import parse_config
from vigil.logs import config_secrets
from vigil.redact import SecretFilter, redact_endpoint, redact_text, redact_url, url_secrets


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s1", "rtsp://admin:***@10.0.0.5:554/s1"),
        ("rtsp://10.0.0.5/s1", "rtsp://10.0.0.5/s1"),
        ("rtsp://token@cam/s", "rtsp://***@cam/s"),
        ("https://hooks.example/x?token=abc&b=1", "https://hooks.example/x?token=***&b=1"),
        ("/videos/a.mp4", "/videos/a.mp4"),
        # Passwords typed as they are: urllib would cut the authority at '#', '/' or '?'.
        ("rtsp://admin:pa#ss@cam/x", "rtsp://admin:***@cam/x"),
        ("rtsp://admin:pa/ss@cam:554/x", "rtsp://admin:***@cam:554/x"),
        ("rtsp://admin:p?ss@10.0.0.1/s", "rtsp://admin:***@10.0.0.1/s"),
        ("rtsp://admin:p@ss@cam/x", "rtsp://admin:***@cam/x"),
        ("rtsp://admin:p%23ss@[fe80::1]:554/x", "rtsp://admin:***@[fe80::1]:554/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.slack.com/services/T0/B0/XXXX", "https://hooks.slack.com"),
        ("https://u:p@hooks.example:8443/x?token=1", "https://hooks.example:8443"),
        ("not a url", "<url>"),
    ],
)
def test_redact_endpoint_keeps_only_scheme_and_host(url: str, expected: str) -> None:
    assert redact_endpoint(url) == expected


def test_url_secrets_for_text_that_bypasses_the_url_redactor() -> None:
    assert url_secrets("rtsp://admin:p%23ss@cam/stream") == ["p%23ss", "p#ss"]
    assert url_secrets("https://hooks.slack.com/services/T0/B0/XXXX", path_is_secret=True) == ["/services/T0/B0/XXXX"]
    assert redact_text("ffmpeg: 401 for user admin with p#ss", url_secrets("rtsp://admin:p%23ss@cam/s")) == (
        "ffmpeg: 401 for user admin with ***"
    )


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
alerts:
  webhooks:
    - name: slack
      url: https://hooks.slack.com/services/T0/B0/hook-token-789
      secrets: ["whsec_SecKLiEOuq1pIIHZxGTNRkDKZYZljNr9"]
""",
        "t.yaml",
        {},
    )
    secrets = config_secrets(config)
    assert "cam-pass-123" in secrets and "sasl-pass-456" in secrets
    assert "/services/T0/B0/hook-token-789" in secrets
    replay = parse_config("cameras: [{id: r, kind: replay, url: /videos/yard.mp4}]", "t.yaml", {})
    assert config_secrets(replay) == []  # a recording's path stays readable in logs
    logger = logging.getLogger("vigil.test.redact")
    handler_filter = SecretFilter(secrets)
    caplog.handler.addFilter(handler_filter)
    try:
        logger.warning("sasl password is %s", "sasl-pass-456")
        logger.warning("camera rtsp://viewer:cam-pass-123@h/s down")
        logger.warning("posting to https://hooks.slack.com/services/T0/B0/hook-token-789 failed")
        try:
            raise RuntimeError("failed with cam-pass-123")
        except RuntimeError:
            logger.exception("boom")
    finally:
        caplog.handler.removeFilter(handler_filter)
    text = caplog.text
    assert "sasl-pass-456" not in text and "cam-pass-123" not in text and "hook-token-789" not in text
    assert "rtsp://viewer:***@h/s" in text
