"""deploy/prometheus/: the alerting rules pass `promtool check rules` and their own unit tests
(`promtool test rules`), name only metrics vigil's processes really export, and every process's real
`/metrics` passes `promtool check metrics`.

promtool comes with Debian's `prometheus` package (deploy/install-system-deps.sh installs it for `make
test`); without it these tests fail under CI=true and skip elsewhere, saying how to install it.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from vigil.config import VigilConfig
from vigil.kafka import ensure_topics
from vigil.scrape import scrape

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "vigil-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "vigil-rules.test.yml"
TOKEN = "prometheus-test-token-0123456789"


def promtool() -> str:
    found = shutil.which("promtool")
    if found:
        return found
    message = "promtool not found: run `bash deploy/install-system-deps.sh --test` (Debian package prometheus)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def run_promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_rules_pass_promtool_check_and_their_unit_tests() -> None:
    checked = run_promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    tested = run_promtool("test", "rules", str(RULE_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_rules_cover_what_operators_need() -> None:
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    assert set(rules) == {
        "VigilCameraDown", "VigilCameraStale", "VigilFramesLagGrowing", "VigilDetectDroppingStaleFrames",
        "VigilDetectDeadLettersRising", "VigilAlertsDeadLettersRising", "VigilWebhookFailing", "VigilWebhookLagging",
        "VigilProcessNotReady", "VigilProcessDown",
    }  # fmt: skip
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    tested = {alert["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for alert in case["alert_rule_test"] if alert["exp_alerts"]}  # fmt: skip
    assert tested == set(rules), f"rules without a firing unit test: {sorted(set(rules) - tested)}"


def test_promtool_check_metrics_catches_a_bad_exposition() -> None:
    """The check below could fail: promtool rejects what a careless exporter writes."""
    bad = run_promtool("check", "metrics", stdin="# HELP jobs Jobs\n# TYPE jobs counter\njobs 3\n")
    assert bad.returncode != 0 and "_total" in bad.stdout + bad.stderr


# ---------------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric_names(text: str) -> set[str]:
    """Family names (HELP/TYPE lines: labelled metrics with no series yet have only these) and sample names."""
    names = set(re.findall(r"^# (?:HELP|TYPE) (\w+)", text, re.M))
    names |= set(re.findall(r"^(\w+)[{ ]", text, re.M))
    return names


@pytest.mark.broker
def test_every_process_exports_what_the_rules_use_and_passes_promtool(
    vigil_config: VigilConfig, shared_data: Path, tmp_path: Path
) -> None:
    promtool()
    data = vigil_config.model_dump(mode="json")
    video = shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4"
    data["cameras"] = [{"id": "campus", "kind": "replay", "url": str(video), "fps": 5,
                        "replay": {"realtime": True, "loop": True, "source_fps": 25}}]  # fmt: skip
    data["detect"].update({"model": "yolox_nano", "batch_size": 2, "http": {"port": free_port(), "token": "${T}"}})
    data["alerts"]["rules"] = [{"name": "people", "classes": ["person"]}]
    ensure_topics(vigil_config.kafka, vigil_config.topics)
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(data, sort_keys=False))
    wanted = {  # a counter that shows the process has done real work before it is scraped
        "ingest": "vigil_ingest_frames_published_total",
        "detect": "vigil_detect_detected_frames_total",
        "alerts": "vigil_alerts_records_total",
        "serve": "vigil_ready",
    }
    ports = {stage: free_port() for stage in wanted}
    processes = {
        stage: subprocess.Popen(
            [sys.executable, "-m", "vigil", "--metrics-port", str(ports[stage]), stage, "--config", str(config_file)],
            cwd=REPO,
            env={**os.environ, "T": TOKEN},
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"{stage}.log").open("wb"),
        )  # fmt: skip
        for stage in wanted
    }
    texts: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 180
        while len(texts) < len(wanted) and time.monotonic() < deadline:
            for stage, process in processes.items():
                log = (tmp_path / f"{stage}.log").read_text(errors="replace")[-2000:]
                assert process.poll() is None, f"vigil {stage} exited: {log}"
                sample = scrape(f"http://127.0.0.1:{ports[stage]}")
                if stage not in texts and sample.ready and sample.get(wanted[stage]) > 0:
                    with urllib.request.urlopen(f"http://127.0.0.1:{ports[stage]}/metrics", timeout=5) as response:
                        texts[stage] = response.read().decode()
            time.sleep(1)
        missing = sorted(set(wanted) - set(texts))
        assert not missing, {s: (tmp_path / f"{s}.log").read_text(errors="replace")[-1500:] for s in missing}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
    for stage, text in texts.items():
        checked = run_promtool("check", "metrics", stdin=text)
        assert checked.returncode == 0, f"vigil {stage}: {checked.stdout}{checked.stderr}"
        assert re.search(r"^vigil_ready 1\.0$", text, re.M), stage
    exported = set().union(*(metric_names(text) for text in texts.values()))
    used = set(re.findall(r"\b(vigil_\w+)", RULES.read_text()))
    assert used >= {"vigil_ingest_camera_up", "vigil_detect_consumer_lag_records", "vigil_ready"}
    unknown = sorted(name for name in used if name not in exported and re.sub(r"_bucket$", "", name) not in exported)
    assert not unknown, f"rules use metrics no process exports: {unknown}"


def test_readyz_and_vigil_ready_agree() -> None:
    from vigil.config import MetricsConfig
    from vigil.health import Health
    from vigil.metrics_server import MetricsServer

    health = Health()
    with MetricsServer(MetricsConfig(port=0), health) as server:
        health.set("kafka", True)
        health.set("camera:front", False, "reconnecting")
        text = urllib.request.urlopen(f"{server.url}/metrics", timeout=5).read().decode()
        assert re.search(r"^vigil_ready 0\.0$", text, re.M)
        assert 'vigil_component_ready{component="camera:front"} 0.0' in text
        assert 'vigil_component_ready{component="kafka"} 1.0' in text
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"{server.url}/readyz", timeout=5)
        health.set("camera:front", True, "streaming")
        text = urllib.request.urlopen(f"{server.url}/metrics", timeout=5).read().decode()
        assert re.search(r"^vigil_ready 1\.0$", text, re.M)
