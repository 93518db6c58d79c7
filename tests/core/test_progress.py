"""What `vigil up` prints, as pure logic: the start block says where things go, the progress line
shows each camera's and stage's state in /readyz's words and why nothing flows."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

from vigil.config import VigilConfig
from vigil.health import ComponentStatus
from vigil.progress import Progress, _console_url, startup_block, status_report
from vigil.scrape import Sample


def sample(parts: dict[str, tuple[bool, str]], **totals: float) -> Sample:
    components = [ComponentStatus(name, ok, detail, 0.0) for name, (ok, detail) in parts.items()]
    return Sample(ok=True, totals=dict(totals), ready=all(c.ok for c in components), components=components)


def test_start_block_names_where_things_go_without_secrets() -> None:
    config = VigilConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": ["kafka-1:9092"]},
            "cameras": [{"id": "door", "url": "rtsp://viewer:hunter2@10.0.0.5/stream", "fps": 4}],
            "alerts": {
                "rules": [{"name": "at-door", "classes": ["person"], "cameras": ["door"]}],
                "webhooks": [
                    {
                        "name": "slack",
                        "url": "https://hooks.example.com/services/T0/B0/SeCrEtToKeN",
                        "secrets": ["whsec_" + "A" * 24],
                    }
                ],
            },
        }
    )
    block = startup_block(config, {"ingest": 9400, "detect-1": 9401})
    assert "broker    kafka-1:9092" in block
    assert "cameras   door (rtsp://viewer:***@10.0.0.5/stream, 4 fps)" in block
    assert "model     yolox_nano, execution provider auto" in block
    assert "rules     at-door (person, door)" in block
    assert "webhooks  slack -> https://hooks.example.com" in block
    assert "metrics   ingest :9400, detect-1 :9401" in block
    assert "console   http://127.0.0.1:8080" in block  # web is on by default
    assert "hunter2" not in block and "SeCrEtToKeN" not in block
    headless = VigilConfig.model_validate({"web": {"enabled": False}})
    assert "console" not in startup_block(headless, {})

    bare = startup_block(VigilConfig(), {})
    assert "webhooks  none: alerts only go to the alerts topic vigil.alerts" in bare
    assert "(embedded broker" in bare and "cameras   none enabled" in bare and "rules     none" in bare


def test_console_url_when_a_web_section_is_enabled() -> None:
    web = SimpleNamespace(enabled=True, host="0.0.0.0", port=8080, public_url=None)
    assert _console_url(cast(VigilConfig, SimpleNamespace(web=web))) == "http://127.0.0.1:8080"
    web.public_url = "https://vigil.example.com/"
    assert _console_url(cast(VigilConfig, SimpleNamespace(web=web))) == "https://vigil.example.com"
    web.enabled = False
    assert _console_url(cast(VigilConfig, SimpleNamespace(web=web))) is None
    assert _console_url(VigilConfig()) == "http://127.0.0.1:8080"  # the default web section


def test_progress_line_uses_the_readyz_words_and_says_why_idle() -> None:
    progress = Progress(has_rules=True)
    camera = (False, "reconnecting for 12 s, try 4; last error: could not open rtsp://viewer:***@cam/1")
    samples = {
        "ingest": sample({"camera:front-door": camera, "kafka": (True, "producer connected")}),
        "detect-1": sample({"kafka": (True, "connected"), "model": (False, "loading yolox_nano")}),
        "alerts": Sample(ok=False, error="Connection refused"),
    }
    line = progress.line(samples, {"frames": 0, "detections": None})
    assert line.startswith("front-door reconnecting for 12 s, try 4 | detect: 0 frames, 0.0/s")
    assert "detect-1 not ready: model: loading yolox_nano" in line
    assert "alerts starting" in line, "never answered yet: starting, not an error"
    assert "lag frames 0, detections -" in line and line.endswith("idle: no camera streaming")
    assert progress.changes(samples) == [
        "ingest ready: kafka: producer connected",
        "detect-1 not ready: model: loading yolox_nano",
    ]
    assert progress.changes(samples) == [], "a change is told once"

    streaming = (True, "streaming at 5.0 fps")
    samples = {
        "ingest": sample({"camera:front-door": streaming, "kafka": (True, "ok")}),
        "detect-1": sample({"model": (True, "yolox_nano on CPUExecutionProvider")},
                           vigil_detect_detected_frames_total=50.0),
        "alerts": sample({"kafka": (True, "topics ready")}),
    }  # fmt: skip
    progress.last_t -= 10  # ten seconds later
    line = progress.line(samples, {"frames": 0, "detections": 0})
    assert line.startswith("front-door streaming at 5.0 fps | detect: 50 frames, 5.0/s")
    assert "alerts: 0 fired, 0 delivered" in line and line.endswith("no rule matched yet")
    assert progress.changes(samples) == [
        "detect-1 ready: model: yolox_nano on CPUExecutionProvider",
        "alerts ready: kafka: topics ready",
    ]

    ended = Progress().line({"detect-1": samples["detect-1"]}, {"frames": 0}, ingest_finished=True)
    assert ended.startswith("cameras: recordings ended") and ended.endswith("idle: recordings ended, lag 0")


def test_status_report_lists_every_part_in_its_words() -> None:
    report = status_report(
        "ingest", 42, "http://127.0.0.1:9400",
        sample({"camera:door": (False, "offline since 07:01:29, try 31"), "kafka": (True, "producer connected")},
               vigil_ingest_reconnects_total=31.0, python_gc_collections_total=7.0),
    )  # fmt: skip
    assert report == [
        "    ingest  pid 42  http://127.0.0.1:9400  not ready: camera:door: offline since 07:01:29, try 31",
        "            --  camera:door: offline since 07:01:29, try 31",
        "            ok  kafka: producer connected",
        "            vigil_ingest_reconnects_total 31",
    ]


def test_an_ingest_that_exited_zero_has_ended_before_the_supervisor_sees_it() -> None:
    """The progress line can come before the supervisor reaps ingest: it must say the recordings ended,
    not 'ingest not answering' for a tick."""
    import subprocess
    import sys

    from vigil.up import Service

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    failed = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    done.wait(), failed.wait()
    assert Service("ingest", [], 0, process=done).ended
    assert not Service("ingest", [], 0, process=failed).ended  # a crash is not an end: it is restarted
    assert not Service("detect-1", [], 0, process=done).ended  # only ingest ends by itself
    assert Service("detect-1", [], 0, finished=True).ended
