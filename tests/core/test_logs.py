"""Quiet, honest logs: repeated warnings folded into a count per minute, and native libraries'
lines (FFmpeg, OpenCV, written to descriptor 2 by C code) routed through logging with secrets masked."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vigil.logs import FoldRepeats, RepeatedLog
from vigil.native_logs import classify

REPO = Path(__file__).resolve().parents[2]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def folded(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == name]


def test_first_event_is_logged_then_a_count_per_window(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    repeats = RepeatedLog(window_s=60, clock=clock)
    log = logging.getLogger("t.repeats")
    with caplog.at_level(logging.INFO, logger="t.repeats"):
        for n in range(299):  # 5 a second for a minute
            repeats.log(log, logging.WARNING, "unknown_camera", "ghost", "dead-lettered %d: camera 'ghost'", n)
            clock.now += 0.2
        repeats.log(log, logging.WARNING, "unknown_camera", "other", "dead-lettered: camera 'other'")
        assert folded(caplog, "t.repeats") == ["dead-lettered 0: camera 'ghost'", "dead-lettered: camera 'other'"]
        clock.now += 0.3
        repeats.flush()  # the minute of 'ghost' is over
        messages = folded(caplog, "t.repeats")
        assert messages[-1] == "dead-lettered 298: camera 'ghost' [298 more like this in the last 60 s]"
        assert all(r.levelno == logging.WARNING for r in caplog.records)
        clock.now += 61
        repeats.flush()  # 'other' had no repeats: nothing to say, its window is simply forgotten
        assert len(folded(caplog, "t.repeats")) == 3
        repeats.log(log, logging.WARNING, "unknown_camera", "other", "dead-lettered again")
        assert folded(caplog, "t.repeats")[-1] == "dead-lettered again", "a quiet minute resets the key"


def test_forget_drops_a_cameras_counts_and_levels_are_respected(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    repeats = RepeatedLog(window_s=60, clock=clock)
    log = logging.getLogger("t.forget")
    with caplog.at_level(logging.WARNING, logger="t.forget"):
        for _ in range(3):
            repeats.log(log, logging.WARNING, "cannot open", "door", "camera door: cannot open")
        assert not repeats.log(log, logging.INFO, "stale", "door", "below the level: neither logged nor counted")
        repeats.forget("door")
        repeats.flush(force=True)
        assert folded(caplog, "t.forget") == ["camera door: cannot open"]
        repeats.log(log, logging.WARNING, "cannot open", "door", "camera door: cannot open (new outage)")
        assert folded(caplog, "t.forget")[-1] == "camera door: cannot open (new outage)"


def test_library_warnings_are_folded_by_template(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    repeats = RepeatedLog(window_s=60, clock=clock)
    handler = logging.Handler()
    seen: list[str] = []
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    handler.addFilter(FoldRepeats(("kafka",), repeats))
    library = logging.getLogger("kafka.coordinator.t")
    library.addHandler(handler)
    library.propagate = False
    library.setLevel(logging.DEBUG)
    try:
        for node in range(20):
            library.warning("Marking the coordinator dead (node %s) for group %s", node, "g")
        logging.getLogger("kafka.coordinator.t").info("info passes: %s", 1)
        clock.now += 60
        repeats.flush()
    finally:
        library.removeHandler(handler)
    assert seen == [
        "Marking the coordinator dead (node 0) for group g",
        "info passes: 1",
        "Marking the coordinator dead (node 19) for group g [19 more like this in the last 60 s]",
    ]


@pytest.mark.parametrize(
    ("line", "logger", "level"),
    [
        ("[tcp @ 0x7efd18004d00] Connection to tcp://192.0.2.10:554?timeout=0 failed: No route to host",
         "native.ffmpeg", logging.DEBUG),
        ("[rtsp @ 0x55d0c1a0] method DESCRIBE failed: 401 Unauthorized", "native.ffmpeg", logging.DEBUG),
        ("[mov,mp4,m4a,3gp,3g2,mj2 @ 0x1] moov atom not found", "native.ffmpeg", logging.DEBUG),
        ("[OPENCV:FFMPEG:16] Connection refused", "native.ffmpeg", logging.DEBUG),
        ("[ WARN:0@3.519] global cap.cpp:212 open VIDEOIO(FFMPEG): backend is generally available",
         "native.opencv", logging.DEBUG),
        ("[ERROR:0@0.1] global cap.cpp:164 open VIDEOIO(FFMPEG): raised unknown C++ exception!",
         "native.opencv", logging.DEBUG),
        ("[FATAL:0@1.0] global persistence.cpp:1 out of memory", "native.opencv", logging.ERROR),
        ("terminate called after throwing an instance of 'std::bad_alloc'", "native", logging.WARNING),
    ],
)  # fmt: skip
def test_native_lines_are_classified(line: str, logger: str, level: int) -> None:
    assert classify(line) == (logger, level)


PROBE = textwrap.dedent(
    """
    import os, sys
    import cv2
    from vigil.config import VigilConfig
    from vigil.logs import setup_logging
    from vigil.native_logs import NativeLogCapture

    config = VigilConfig.model_validate({"cameras": [{"id": "door", "url": "rtsp://viewer:Wr0ng-Pass@127.0.0.1:9/x"}]})
    setup_logging(sys.argv[1], config)
    with NativeLogCapture():
        cap = cv2.VideoCapture("rtsp://viewer:Wr0ng-Pass@127.0.0.1:9/x", cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2000])
        assert not cap.isOpened()
        # What a library could print: the password in a URL, and the password alone.
        os.write(2, b"[rtsp @ 0xdead] Error opening rtsp://viewer:Wr0ng-Pass@127.0.0.1:9/x\\n")
        os.write(2, b"a library line without newline, with Wr0ng-Pass")
        print("python's own stderr stays direct", file=sys.stderr)
    print("restored", file=sys.stderr)
    """
)


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_native_lines_go_through_logging_with_secrets_masked(level: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, level], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    err = result.stderr
    assert result.returncode == 0, err
    assert "Wr0ng-Pass" not in err + result.stdout
    assert "python's own stderr stays direct" in err and "restored" in err
    assert "WARNING native: a library line without newline, with ***" in err, "unknown lines are kept, masked"
    raw = [line for line in err.splitlines() if line.startswith(("[tcp @", "[ WARN", "[rtsp @"))]
    assert raw == [], "no library line reaches the terminal as it is"
    if level == "INFO":
        assert "native.ffmpeg" not in err and "native.opencv" not in err and "cap.cpp" not in err
    else:
        assert "DEBUG   native.ffmpeg: [tcp @ 0x" in err and "Connection refused" in err
        assert "DEBUG   native.opencv: [ WARN:" in err and "cap.cpp" in err
        assert "native.ffmpeg: [rtsp @ 0xdead] Error opening rtsp://viewer:***@127.0.0.1:9/x" in err
