"""What `vigil config validate` (and every stage's start) checks beyond the schema: errors pinned to the
field at fault, the model registry, empty files, and secrets written inline instead of ${ENV}."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from vigil.config import VigilConfig
from vigil.config.base import Section
from vigil.config.loader import check_config, check_text
from vigil.config.secrets import inline_secrets
from vigil.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SECRET = "whsec_SecKLiEOuq1pIIHZxGTNRkDKZYZljNr9"


def issues_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        check_config(path, env or {})
    return [str(issue) for issue in info.value.issues]


def write(tmp_path: Path, text: str, name: str = "vigil.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- pinning


def test_the_issue_examples_are_pinned_to_their_own_key_and_line(tmp_path: Path) -> None:
    camera = write(tmp_path, "cameras:\n  - id: a\n    url: rtsp://admin:pa#ss@cam/s\n")
    assert issues_of(camera) == [
        "line 3: cameras[0].url: the password in url contains '#', '/', '?' or '@': percent-encode them "
        "(# as %23, / as %2F, ? as %3F, @ as %40)"
    ]
    token = write(tmp_path, f"{'cameras: [{id: a, url: rtsp://h/s}]'}\ndetect:\n  http:\n    token: ${{T}}\n")
    assert issues_of(token, {"T": "short"}) == [
        "line 4: detect.http.token: token must be at least 16 characters; generate one with `openssl rand -hex 24`"
    ]


def test_a_fetch_window_as_long_as_the_request_timeout_is_refused_at_its_key(tmp_path: Path) -> None:
    config = write(
        tmp_path,
        "kafka: {request_timeout_ms: 1000}\ndetect:\n  fetch_wait_ms: 1000\nalerts:\n  fetch_wait_ms: 999\n",
    )
    assert issues_of(config) == [
        "line 3: detect.fetch_wait_ms: detect.fetch_wait_ms (1000) must be less than kafka.request_timeout_ms "
        "(1000); lower it or raise the timeout"
    ]


def _model_validators(path: Path) -> list[ast.FunctionDef]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        and any("model_validator" in ast.unparse(decorator) for decorator in node.decorator_list)
    ]


def test_every_model_validator_names_the_field_at_fault() -> None:
    """A model validator's ValueError is reported at its section (`cameras[0]`); FieldError names the field."""
    offenders, checked = [], 0
    for path in sorted((REPO / "vigil" / "config").glob("*.py")):
        for function in _model_validators(path):
            checked += 1
            for node in ast.walk(function):
                if isinstance(node, ast.Raise) and node.exc is not None and "FieldError" not in ast.unparse(node.exc):
                    offenders.append(f"{path.name}:{node.lineno} {function.name}: raise {ast.unparse(node.exc)[:60]}")
    assert checked >= 10, "found too few model validators: did the layout change?"
    assert not offenders, offenders


# ---------------------------------------------------------------------------------------------- registry


def test_unknown_model_is_refused_with_a_suggestion_and_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras: [{id: a, url: rtsp://h/s}]\ndetect:\n  batch_size: 4\n  model: yolox_nan\n")
    (message,) = issues_of(path)
    assert message.startswith("line 4: detect.model: unknown model 'yolox_nan'; did you mean 'yolox_nano'?"), message
    assert "yolov8n_int8, yolox_nano" in message and "`vigil models list`" in message


def test_models_dir_is_the_registry_checked(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "mine.yaml").write_text("name: mine\n")
    ok = write(tmp_path, f"cameras: [{{id: a, url: rtsp://h/s}}]\ndetect:\n  models_dir: {registry}\n  model: mine\n")
    assert check_config(ok, {}).config.detect.model == "mine"
    builtin = write(tmp_path, f"cameras: [{{id: a, url: rtsp://h/s}}]\ndetect:\n  models_dir: {registry}\n", "b.yaml")
    assert "detect.model: unknown model 'yolox_nano'; registered in" in issues_of(builtin)[0]
    missing = write(tmp_path, "cameras: [{id: a, url: rtsp://h/s}]\ndetect:\n  models_dir: /nonexistent/m\n", "m.yaml")
    assert issues_of(missing)[0].startswith("line 3: detect.models_dir: model registry folder /nonexistent/m does not")
    onnx = write(tmp_path, "cameras: [{id: a, url: rtsp://h/s}]\ndetect:\n  model: /nowhere/x.onnx\n", "o.yaml")
    assert issues_of(onnx) == ["line 3: detect.model: model file /nowhere/x.onnx does not exist; give a path or a "
                               "registry name"]  # fmt: skip


def test_every_stage_refuses_an_unknown_model_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, "cameras: [{id: a, url: rtsp://h/s}]\ndetect:\n  model: yolov9\n")
    for command in (["ingest"], ["detect"], ["alerts"], ["serve"], ["topics"]):
        result = subprocess.run(
            [sys.executable, "-m", "vigil", *command, "--config", str(path)],
            capture_output=True, text=True, timeout=60, cwd=tmp_path,
        )  # fmt: skip
        assert result.returncode == 2, (command, result.stderr)
        assert "line 3: detect.model: unknown model 'yolov9'" in result.stderr, (command, result.stderr)


# ---------------------------------------------------------------------------------------------- secrets


INLINE = f"""
kafka:
  security_protocol: SASL_SSL
  sasl_mechanism: SCRAM-SHA-512
  sasl_username: vigil
  sasl_password: hunter2-sasl
  ssl_password: hunter2-key
cameras:
  - id: a
    url: rtsp://admin:hunter2-cam@h/s
  - id: b
    url: rtsp://viewer:${{CAM_B}}@h/s
  - id: c
    kind: replay
    url: ../footage/TUD-Campus-2015.mp4
detect:
  http:
    token: hunter2-api-token-0123456789
alerts:
  webhooks:
    - name: h
      url: https://x/hook?token=hunter2token
      secrets: ["${{HOOK_SECRET}}", "{SECRET}"]
    - name: slack
      url: https://hooks.slack.com/services/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V
      secrets: ["${{HOOK_SECRET}}"]
"""


def test_every_inline_secret_is_warned_about_by_key_and_line_never_value() -> None:
    checked = check_text(textwrap.dedent(INLINE), "t.yaml", {"CAM_B": "pw", "HOOK_SECRET": SECRET})
    warnings = [str(w) for w in checked.warnings]
    assert warnings == [
        "line 6: kafka.sasl_password: secret written inline; write ${VIGIL_KAFKA_SASL_PASSWORD} and export "
        "VIGIL_KAFKA_SASL_PASSWORD, so the file holds no secret",
        "line 7: kafka.ssl_password: secret written inline; write ${VIGIL_KAFKA_SSL_PASSWORD} and export "
        "VIGIL_KAFKA_SSL_PASSWORD, so the file holds no secret",
        "line 10: cameras[0].url: password written inline in the URL; write that part as ${VIGIL_CAMERAS_0_URL} "
        "and export it, so the file holds no secret",
        "line 18: detect.http.token: secret written inline; write ${VIGIL_DETECT_HTTP_TOKEN} and export "
        "VIGIL_DETECT_HTTP_TOKEN, so the file holds no secret",
        "line 22: alerts.webhooks[0].url: query token written inline in the URL; write that part as "
        "${VIGIL_ALERTS_WEBHOOKS_0_URL} and export it, so the file holds no secret",
        "line 23: alerts.webhooks[0].secrets[1]: secret written inline; write ${VIGIL_ALERTS_WEBHOOKS_0_SECRETS_1} "
        "and export VIGIL_ALERTS_WEBHOOKS_0_SECRETS_1, so the file holds no secret",
        "line 25: alerts.webhooks[1].url: path token written inline in the URL; write that part as "
        "${VIGIL_ALERTS_WEBHOOKS_1_URL} and export it, so the file holds no secret",
    ], warnings
    assert "hunter2" not in "\n".join(warnings) and SECRET not in "\n".join(warnings)


def test_secrets_from_the_environment_get_no_warning() -> None:
    text = """
    kafka:
      security_protocol: SASL_SSL
      sasl_mechanism: PLAIN
      sasl_username: vigil
      sasl_password: ${KAFKA_PASSWORD}
    cameras:
      - {id: a, url: "rtsp://viewer:${CAM_PASSWORD:-changeme}@192.0.2.10:554/stream1"}
      - {id: b, url: "rtsp://192.0.2.11/h264Preview_01_main"}
    detect:
      http: {token: "${VIGIL_API_TOKEN}"}
    alerts:
      webhooks:
        - {name: h, url: "https://x/hooks/vigil?token=${HOOK_TOKEN}", secrets: ["${HOOK_SECRET}"]}
    """
    env = {"KAFKA_PASSWORD": "p", "VIGIL_API_TOKEN": "t" * 20, "HOOK_TOKEN": "x", "HOOK_SECRET": SECRET}
    assert check_text(textwrap.dedent(text), "t.yaml", env).warnings == []
    for example in ("full.yaml", "minimal.yaml", "demo.yaml"):
        assert check_config(REPO / "examples" / example, {}).warnings == [], example


def test_inline_secret_check_walks_any_secret_field() -> None:
    """A SecretStr field a section adds later is covered without being listed anywhere."""

    class Vault(Section):
        api_key: SecretStr | None = Field(None, title="k")
        backup_url: SecretStr | None = Field(None, title="u")

    class Root(Section):
        vaults: list[Vault] = Field(default_factory=list, title="v")

    raw = {"vaults": [{"api_key": "${K}"}, {"api_key": "plain", "backup_url": "s3://u:pw@b/p"}]}
    assert list(inline_secrets(Root, raw)) == [(("vaults", 1, "api_key"), "value"), (("vaults", 1, "backup_url"),
                                                                                     "password")]  # fmt: skip
    assert list(inline_secrets(VigilConfig, {"kafka": {"sasl_password": "${P}"}})) == []


def test_validate_cli_prints_warnings_and_refuses_empty_files(tmp_path: Path) -> None:
    inline = write(tmp_path, "cameras: [{id: a, url: 'rtsp://admin:hunter2@h/s'}]\n", "inline.yaml")
    empty = write(tmp_path, "# nothing yet\n", "empty.yaml")
    env = {k: v for k, v in os.environ.items() if k != "VIGIL_CONFIG"}
    ok = subprocess.run([sys.executable, "-m", "vigil", "config", "validate", str(inline)],
                        capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert ok.returncode == 0 and "1 warnings" in ok.stdout, ok.stdout + ok.stderr
    assert f"{inline}: warning: line 1: cameras[0].url: password written inline" in ok.stderr
    assert "hunter2" not in ok.stdout + ok.stderr
    refused = subprocess.run([sys.executable, "-m", "vigil", "config", "validate", str(empty)],
                             capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
    assert refused.returncode == 1 and "the config is empty" in refused.stderr
    assert "examples/minimal.yaml" in refused.stderr
    # Every command that loads the config logs the same warning at start, key only (one that needs no broker).
    started = subprocess.run([sys.executable, "-m", "vigil", "models", "--config", str(inline), "list"],
                             capture_output=True, text=True, timeout=60, env=env, cwd=REPO)  # fmt: skip
    assert started.returncode == 0 and "yolox_nano" in started.stdout, started.stderr
    assert "cameras[0].url: password written inline" in started.stderr
    assert "hunter2" not in started.stderr
