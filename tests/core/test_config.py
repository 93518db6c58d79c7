"""Config validation tables: good files load, bad ones fail with the exact key, line and fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from vigil.config import VigilConfig
from vigil.config.loader import load_config, parse_config
from vigil.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_SecKLiEOuq1pIIHZxGTNRkDKZYZljNr9"


def errors_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "test.yaml", env or {})
    return [str(issue) for issue in info.value.issues]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs(path: Path) -> None:
    if path.name.startswith("bad-"):
        with pytest.raises(ConfigError):
            load_config(path, {})
    else:
        config = load_config(path, {})
        assert isinstance(config, VigilConfig)


MINIMAL = "cameras:\n  - {id: a, url: rtsp://h/s}\n"


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "{}\n", "---\n"])
def test_empty_file_is_refused_with_what_a_minimal_one_looks_like(text: str) -> None:
    messages = errors_of(text)
    assert len(messages) == 1 and messages[0].startswith("line 1: <root>: the config is empty"), messages
    assert "cameras:" in messages[0] and "url: rtsp://viewer:${FRONT_DOOR_PASSWORD}@" in messages[0]
    assert "examples/minimal.yaml" in messages[0]


def test_a_minimal_file_gets_the_defaults() -> None:
    config = parse_config(MINIMAL, "minimal.yaml", {})
    assert config.kafka.uses_embedded_broker
    assert config.kafka.bootstrap() == ["127.0.0.1:9092"]
    assert config.topics.frames.name == "vigil.frames"
    assert config.detect.batch_size == 8


CASES = [
    pytest.param(
        """
        cameras:
          - id: a
            url: rtsp://h/s
            fps: 120
        """,
        "line 5: cameras[0].fps: Input should be less than or equal to 60",
        id="fps-bound",
    ),
    pytest.param(
        """
        detect:
          batch_sise: 4
        """,
        "line 3: detect.batch_sise: unknown key; did you mean 'batch_size'?",
        id="typo-suggests",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: rtsp://h/s
            zones:
              - name: z
                polygon: [[0, 0], [1, 1]]
        """,
        "line 7: cameras[0].zones[0].polygon: List should have at least 3 items",
        id="two-point-polygon",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: rtsp://h/s
            zones:
              - name: z
                units: fraction
                polygon: [[0, 0], [2, 0], [1, 1]]
        """,
        "line 8: cameras[0].zones[0].polygon: with units: fraction every vertex must lie in 0..1",
        id="fraction-out-of-range",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: /videos/a.mp4
        """,
        "line 4: cameras[0].url: kind: rtsp needs an rtsp:// url; for a file set kind: replay",
        id="file-url-needs-replay-kind",
    ),
    pytest.param(
        """
        cameras:
          - {id: a, url: "rtsp://h/s"}
          - {id: a, url: "rtsp://h/t"}
        """,
        "line 4: cameras[1].id: camera id 'a' is used twice",
        id="duplicate-camera",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: rtsp://h/s
        alerts:
          rules:
            - name: r
              zone: porch
        """,
        "line 8: alerts.rules[0].zone: zone 'porch' is not defined on camera(s) ['a']",
        id="rule-zone-missing",
    ),
    pytest.param(
        """
        alerts:
          rules:
            - name: r
              classes: [person, persn]
        """,
        "line 5: alerts.rules[0].classes[1]: unknown class 'persn'; did you mean 'person'?",
        id="unknown-class",
    ),
    pytest.param(
        """
        alerts:
          rules:
            - name: r
              cameras: [ghost]
        """,
        "alerts.rules[0].cameras[0]: unknown camera 'ghost'",
        id="rule-unknown-camera",
    ),
    pytest.param(
        """
        alerts:
          webhooks:
            - name: h
              url: ftp://x
              secrets: ["whsec_SecKLiEOuq1pIIHZxGTNRkDKZYZljNr9"]
        """,
        "line 5: alerts.webhooks[0].url: webhook url must start with http:// or https://",
        id="webhook-scheme",
    ),
    pytest.param(
        """
        kafka:
          security_protocol: SASL_SSL
        """,
        "line 2: kafka.sasl_mechanism: security_protocol SASL_SSL needs sasl_mechanism, sasl_username, sasl_password",
        id="sasl-incomplete",
    ),
    pytest.param(
        """
        kafka:
          bootstrap_servers: [kafka-1]
        """,
        "line 3: kafka.bootstrap_servers: bootstrap server 'kafka-1' must be host:port",
        id="bootstrap-host-port",
    ),
    pytest.param(
        """
        detect:
          providers: [auto, cpu]
        """,
        "line 3: detect.providers: use either [auto] or an explicit list",
        id="providers-auto-exclusive",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: rtsp://u:${CAM_PASS}@h/s
        """,
        "line 4: cameras[0].url: environment variable CAM_PASS is not set",
        id="env-missing",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: "rtsp://admin:pa#ss@cam/s"
        """,
        "line 4: cameras[0].url: the password in url contains '#', '/', '?' or '@': percent-encode them",
        id="password-needs-percent-encoding",
    ),
    pytest.param(
        """
        cameras:
          - id: a
            url: rtsp://cam/s
            max_width: 1280
            zones:
              - {name: drive, polygon: [[0, 0], [1900, 0], [1900, 1000]]}
        """,
        "line 7: cameras[0].zones[0].polygon: zone 'drive' has vertices right of max_width=1280",
        id="pixel-zone-beyond-max-width",
    ),
    # Every cross-field check is pinned to the field at fault (vigil.config.base.FieldError), with its line.
    pytest.param(
        "alerts:\n  tracker:\n    high_threshold: 0.3\n    low_threshold: 0.4\n",
        "line 4: alerts.tracker.low_threshold: low_threshold must not exceed high_threshold",
        id="tracker-thresholds",
    ),
    pytest.param(
        f"alerts:\n  webhooks:\n    - name: h\n      url: https://x/h\n      secrets: ['{SECRET}']\n"
        "      initial_backoff_s: 10\n      max_backoff_s: 5\n",
        "line 7: alerts.webhooks[0].max_backoff_s: max_backoff_s must be at least initial_backoff_s",
        id="webhook-backoff",
    ),
    pytest.param(
        "alerts:\n  rules:\n    - name: r\n    - name: s\n    - name: r\n",
        "line 5: alerts.rules[2].name: rule name 'r' is used twice",
        id="rule-names-unique",
    ),
    pytest.param(
        f"alerts:\n  webhooks:\n    - {{name: h, url: 'https://x/a', secrets: ['{SECRET}']}}\n"
        f"    - name: h\n      url: https://x/b\n      secrets: ['{SECRET}']\n",
        "line 4: alerts.webhooks[1].name: webhook name 'h' is used twice",
        id="webhook-names-unique",
    ),
    pytest.param(
        "cameras:\n  - id: a\n    url: rtsp://h/s\n    zones:\n      - name: z\n        polygon: [[-1, 0], [5, 0], [5, 5]]\n",
        "line 6: cameras[0].zones[0].polygon: polygon vertices must not be negative",
        id="zone-negative",
    ),
    pytest.param(
        "cameras:\n  - id: a\n    url: rtsp://h/s\n    zones:\n      - name: z\n        polygon: [[0, 0], [1, 1], [2, 2]]\n",
        "line 6: cameras[0].zones[0].polygon: polygon has zero area",
        id="zone-collinear",
    ),
    pytest.param(
        "cameras:\n  - id: a\n    url: rtsp://h/s\n    zones:\n      - {name: z, polygon: [[0, 0], [5, 0], [5, 5]]}\n"
        "      - {name: z, polygon: [[0, 0], [6, 0], [6, 6]]}\n",
        "line 6: cameras[0].zones[1].name: zone name 'z' is used twice on this camera",
        id="zone-names-unique",
    ),
    pytest.param(
        "cameras:\n  - id: a\n    kind: replay\n    url: a.mp4\n    replay:\n      start_frame: 10\n      end_frame: 5\n",
        "line 7: cameras[0].replay.end_frame: end_frame must be greater than start_frame",
        id="replay-range",
    ),
    pytest.param(
        "cameras:\n  - id: a\n    url: rtsp://h/s\n    reconnect_initial_s: 5\n    reconnect_max_s: 1\n",
        "line 5: cameras[0].reconnect_max_s: reconnect_max_s must be at least reconnect_initial_s",
        id="reconnect-range",
    ),
    pytest.param(
        "cameras:\n  - id: a\n    url: rtsp://h/s\n    decode_threads: -1\n",
        "line 4: cameras[0].decode_threads: Input should be greater than or equal to 0",
        id="decode-threads-negative",
    ),
    pytest.param(
        "kafka:\n  embedded:\n    port: 9092\n    controller_port: 9092\n",
        "line 4: kafka.embedded.controller_port: port and controller_port must differ",
        id="embedded-ports",
    ),
    pytest.param(
        "kafka:\n  consumer:\n    session_timeout_ms: 6000\n    heartbeat_interval_ms: 3000\n",
        "line 4: kafka.consumer.heartbeat_interval_ms: heartbeat_interval_ms must be at most a third",
        id="heartbeat-vs-session",
    ),
    pytest.param(
        "kafka:\n  request_timeout_ms: 30000\n  producer:\n    delivery_timeout_ms: 20000\n",
        "line 4: kafka.producer.delivery_timeout_ms: producer.delivery_timeout_ms (20000) must be greater",
        id="delivery-vs-request",
    ),
    pytest.param(
        "kafka:\n  request_timeout_ms: 30000\n  producer:\n    delivery_timeout_ms: 31000\n"
        "    frames_linger_ms: 1000\n",
        "line 4: kafka.producer.delivery_timeout_ms: producer.delivery_timeout_ms (31000) must be greater than "
        "producer.frames_linger_ms + request_timeout_ms (31000)",
        id="delivery-vs-frames-linger",
    ),
    pytest.param(
        "topics:\n  frames: {name: t, partitions: 1}\n  detections:\n    name: t\n    partitions: 1\n",
        "line 4: topics.detections.name: topic 't' is already the frames topic",
        id="topic-names-unique",
    ),
    pytest.param(
        "detect:\n  providers: [cpu, cpu]\n",
        "line 2: detect.providers: providers must not repeat",
        id="providers-repeat",
    ),
    pytest.param(
        "detect:\n  http:\n    port: 8600\n    token: ${TOKEN:-short}\n",
        "line 4: detect.http.token: token must be at least 16 characters",
        id="short-api-token",
    ),
    pytest.param("cameras: [\n", "<yaml>: not valid YAML", id="yaml-syntax"),
    pytest.param("- a\n- b\n", "line 1: <root>: the config must be a mapping of sections", id="not-a-mapping"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_config_names_key_and_line(text: str, expected: str) -> None:
    messages = errors_of(text)
    assert any(expected in m for m in messages), messages


def test_all_errors_reported_at_once() -> None:
    messages = errors_of(
        """
        cameras:
          - id: a
            url: rtsp://h/s
            fps: 0
        detect:
          batch_size: 0
          conf_threshold: 2
        """
    )
    assert len(messages) == 3, messages


def test_env_reference_resolves_and_default_applies() -> None:
    text = """
    cameras:
      - id: a
        url: rtsp://viewer:${CAM_PASS}@h/s
      - id: b
        url: rtsp://viewer:${OTHER:-fallback}@h/s
    """
    config = parse_config(textwrap.dedent(text), "t.yaml", {"CAM_PASS": "s3cr3t"})
    assert config.cameras[0].url.get_secret_value() == "rtsp://viewer:s3cr3t@h/s"
    assert config.cameras[1].url.get_secret_value() == "rtsp://viewer:fallback@h/s"


def test_secrets_never_echoed_in_errors() -> None:
    text = f"""
    kafka:
      security_protocol: SASL_SSL
      sasl_mechanism: PLAIN
      sasl_username: u
      sasl_password: hunter2-sasl
      request_timeout_ms: 1
    cameras:
      - id: a
        url: rtsp://admin:hunter2-cam@h/s
        fps: 999
    alerts:
      webhooks:
        - name: h
          url: https://x/hook?token=hunter2-token
          secrets: ["whsec_short", "{SECRET}"]
    """
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "t.yaml", {})
    rendered = str(info.value)
    assert "secret #1 must be 'whsec_'" in rendered
    for secret in ("hunter2-sasl", "hunter2-cam", "hunter2-token", "whsec_short", SECRET):
        assert secret not in rendered
    assert "hunter2" not in repr(load_config(REPO / "examples" / "full.yaml", {"FRONT_DOOR_PASSWORD": "hunter2"}))


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL, "t.yaml", {})
    with pytest.raises(ValueError):
        config.detect.batch_size = 3  # type: ignore[misc]


def test_every_field_is_titled() -> None:
    missing: list[str] = []

    def walk(model: type, prefix: str) -> None:
        for name, field in model.model_fields.items():  # type: ignore[attr-defined]
            if not field.title:
                missing.append(prefix + name)
            annotation = field.annotation
            for candidate in (annotation, *getattr(annotation, "__args__", ())):
                if isinstance(candidate, type) and hasattr(candidate, "model_fields"):
                    walk(candidate, f"{prefix}{name}.")

    walk(VigilConfig, "")
    assert not missing, f"fields without a title: {missing}"


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml", {})


def test_configuration_reference_is_current() -> None:
    from vigil.config.docs import render_markdown

    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render_markdown(), (
        "docs/configuration.md is stale: run `vigil config docs > docs/configuration.md`"
    )


def test_a_jvm_option_that_is_not_a_flag_is_refused_at_its_key() -> None:
    text = MINIMAL + "\nkafka:\n  embedded:\n    jvm_options: [-XX:+UseSerialGC, 'XX:TieredStopAtLevel=1']\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, "t.yaml", {})
    assert "kafka.embedded.jvm_options" in str(info.value) and "starting with '-'" in str(info.value)
    assert parse_config(MINIMAL, "t.yaml", {}).kafka.embedded.jvm_options[0] == "-XX:+UseSerialGC"
