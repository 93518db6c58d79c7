"""FFmpeg's and OpenCV's own lines, for a camera with a wrong password on the loopback RTSP server:
never on the terminal as they are, at DEBUG through vigil's logging, and never with the password."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from vigil.config import VigilConfig

if TYPE_CHECKING:
    from tests.ingest.conftest import RtspServer

pytestmark = [pytest.mark.rtsp, pytest.mark.broker, pytest.mark.timeout(180)]
WRONG = "Wrong-Pass-8086"
RAW = re.compile(r"^(\[[^\]]+ @ 0x|\[ ?(WARN|ERROR|INFO):)")


def run_ingest(config_file: Path, level: str, seconds: float) -> str:
    env = os.environ | {"CAM_PASSWORD": WRONG, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "vigil", "--log-level", level, "ingest", "--config", str(config_file)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        time.sleep(seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output[-3000:]
    return output


def test_wrong_password_library_lines_go_through_logging(
    vigil_config: VigilConfig, rtsp_server: Callable[..., RtspServer], tmp_path: Path
) -> None:
    server = rtsp_server(user="viewer", password="Right-Pass-1234")
    data = vigil_config.model_dump(mode="json", exclude={"cameras"})
    data["cameras"] = [
        {"id": "locked", "url": "rtsp://viewer:${CAM_PASSWORD}@127.0.0.1:" + f"{server.port}/test",
         "open_timeout_s": 2.0, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0},
    ]  # fmt: skip
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(data))

    quiet = run_ingest(config_file, "INFO", 8)
    assert "camera locked: cannot open: could not open rtsp://viewer:***@127.0.0.1" in quiet, quiet[-3000:]
    assert not [line for line in quiet.splitlines() if RAW.match(line)], quiet[-3000:]
    assert "native." not in quiet, "FFmpeg's and OpenCV's lines are below INFO"
    warned = [line for line in quiet.splitlines() if " WARNING " in line and "camera locked" in line]
    assert len([w for w in warned if "more like this" not in w]) == 1, quiet  # then a count (here at exit)

    debug = run_ingest(config_file, "DEBUG", 8)
    routed = [line for line in debug.splitlines() if " native.ffmpeg: " in line or " native.opencv: " in line]
    assert any("401" in line or "Unauthorized" in line for line in routed), debug[-4000:]
    assert not [line for line in debug.splitlines() if RAW.match(line)], debug[-3000:]
    assert WRONG not in quiet + debug and "Right-Pass-1234" not in quiet + debug
