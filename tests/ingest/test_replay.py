"""Replay of the shared TUD footage to the real Kafka broker, in process and through `vigil replay`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry

from ingest.metrics import IngestMetrics
from ingest.runner import IngestRunner
from vigil.config import CameraConfig, VigilConfig
from vigil.kafka import ensure_topics, make_producer

if TYPE_CHECKING:
    from tests.ingest.conftest import FramesReader

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]


@pytest.fixture
def campus(shared_data: Path) -> Path:
    return shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4"


def decoded_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def replay(config: VigilConfig, path: Path, realtime: bool, **extra: object) -> tuple[IngestRunner, float]:
    camera = CameraConfig.model_validate(
        {"id": "campus", "url": str(path), "kind": "replay", "queue_size": 2, "replay": {"realtime": realtime}} | extra
    )
    ensure_topics(config.kafka, config.topics)
    producer = make_producer(config.kafka, "replay-test")
    runner = IngestRunner(
        [camera],
        producer,
        config.topics.frames.name,
        IngestMetrics(CollectorRegistry()),
        lossless=True,
        sample_fps=None,
    )
    started = time.monotonic()
    runner.start()
    assert runner.wait(60.0)
    elapsed = time.monotonic() - started
    runner.stop()
    producer.close(timeout=5)
    return runner, elapsed


def test_replay_fast_publishes_every_frame_in_order(
    vigil_config: VigilConfig, campus: Path, frames_reader: Callable[[VigilConfig], FramesReader]
) -> None:
    runner, _ = replay(vigil_config, campus, realtime=False)
    stats = runner.stats()[0]
    assert (stats.read, stats.published, stats.dropped, stats.delivery_failures) == (71, 71, 0, 0)
    reader = frames_reader(vigil_config)
    assert reader.wait_for(lambda r: len(r) >= 71, 20.0)
    time.sleep(0.5)
    reader.poll(0.5)
    metas = [m for m, _, _ in reader.records]
    assert len(metas) == 71, "exactly the clip's frames, no duplicates"
    assert [m.frame_index for m in metas] == list(range(71))
    assert [m.seq for m in metas] == list(range(71))
    assert [m.media_ns for m in metas] == [i * 40_000_000 for i in range(71)]  # 25 fps from seqinfo.ini
    assert all(m.source == "replay" and m.camera_id == "campus" for m in metas)
    # Ground truth numbering: MOT frame = frame_index + 1, and it covers the same frames.
    gt_frames = {int(line.split(",")[0]) for line in (campus.parent / "gt.txt").read_text().splitlines() if line}
    assert gt_frames <= {m.frame_index + 1 for m in metas}  # type: ignore[operator]
    assert max(gt_frames) == max(m.frame_index for m in metas) + 1  # type: ignore[type-var]
    # Each published image is the very frame its number says (JPEG error is small, neighbours differ more).
    originals = decoded_frames(campus)
    for meta, _, value in reader.records[::10]:
        image = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
        errors = [np.abs(image - originals[i]).mean() for i in range(len(originals))]
        assert int(np.argmin(errors)) == meta.frame_index


def test_replay_paced_takes_true_duration(vigil_config: VigilConfig, campus: Path) -> None:
    runner, elapsed = replay(vigil_config, campus, realtime=True)
    assert runner.stats()[0].published == 71
    expected = 71 / 25  # seqinfo.ini: 25 fps
    print(f"paced replay of 71 frames: {elapsed:.2f}s (true duration {expected:.2f}s)")
    assert expected - 0.2 < elapsed < expected + 2.0  # opening, the first decode and the last flush add to it


def test_replay_cli_samples_by_timestamp(
    vigil_config: VigilConfig, campus: Path, tmp_path: Path, frames_reader: Callable[[VigilConfig], FramesReader]
) -> None:
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(vigil_config.model_dump(mode="json", exclude={"cameras"})))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "vigil", "replay", str(campus), "--camera", "cli-cam", "--fast", "--fps", "5",
               "--config", str(config_file), "--start-frame", "1"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "/70 frames" in result.stderr, result.stderr[-500:]  # progress: frames 1..70
    reader = frames_reader(vigil_config)
    assert reader.wait_for(lambda r: len(r) >= 14, 20.0)
    indices = [m.frame_index for m, _, _ in reader.records]
    # Frames 1..70 (media 0.04..2.8 s) at 5 fps by timestamps: one frame per 0.2 s slot.
    assert indices == list(range(1, 71, 5)), indices


def test_vigil_ingest_exits_non_zero_naming_the_failed_camera(
    vigil_config: VigilConfig, campus: Path, tmp_path: Path, frames_reader: Callable[[VigilConfig], FramesReader]
) -> None:
    data = vigil_config.model_dump(mode="json", exclude={"cameras"})
    data["cameras"] = [
        {"id": "good-cam", "url": str(campus), "kind": "replay", "replay": {"realtime": False, "end_frame": 10}},
        {"id": "lost-cam", "url": str(tmp_path / "missing.mp4"), "kind": "replay"},
    ]
    config_file = tmp_path / "vigil.yaml"
    config_file.write_text(yaml.safe_dump(data))
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    command = [sys.executable, "-m", "vigil", "ingest", "--config", str(config_file)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env)
    output = result.stdout + result.stderr
    # Before: 0, as if every camera had done its job. One bad camera still never stops the others.
    assert result.returncode == 1, output[-2000:]
    assert "final: good-cam: finished" in output and "final: lost-cam: failed" in output, output[-2000:]
    assert "1 of 2 camera(s) ended failed: ['lost-cam']" in output, output[-2000:]
    published = re.search(r"final: good-cam: finished, .*published (\d+),", output)
    assert published is not None and int(published.group(1)) > 0, output[-2000:]
    reader = frames_reader(vigil_config)
    assert reader.wait_for(lambda r: len(r) >= int(published.group(1)), 20.0)
    assert {m.camera_id for m, _, _ in reader.records} == {"good-cam"}
