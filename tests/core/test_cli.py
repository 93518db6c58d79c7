from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def vigil(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil", *args], capture_output=True, text=True, cwd=REPO, env=env, check=False
    )


def test_validate_good_config() -> None:
    result = vigil("config", "validate", "examples/full.yaml")
    assert result.returncode == 0, result.stderr
    assert "examples/full.yaml: ok" in result.stdout


def test_validate_bad_config_names_key_and_line() -> None:
    result = vigil("config", "validate", "examples/bad-config.yaml")
    assert result.returncode == 1
    assert "line 5: cameras[0].fps" in result.stderr
    assert "line 10: detect.batch_sise: unknown key; did you mean 'batch_size'?" in result.stderr
    assert "secret" not in result.stderr  # the URL's password is never echoed


def test_validate_bad_rules() -> None:
    result = vigil("config", "validate", "examples/bad-rules.yaml")
    assert result.returncode == 1
    assert "line 11: alerts.rules[0].zone: zone 'driveway' is not defined" in result.stderr
    assert "line 12: alerts.rules[0].classes[0]: unknown class 'persn'" in result.stderr


def test_schema_is_json() -> None:
    import json

    result = vigil("config", "schema")
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert "cameras" in schema["properties"]
