"""Image folders replay in natural order (`2.jpg` before `10.jpg`), so frames saved unpadded as
`1.jpg … 71.jpg` reach Kafka as the clip's frames in order; names without numbers keep plain order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pytest

from ingest.sources import ReplaySource
from tests.ingest.test_replay import decoded_frames, replay
from vigil.config import VigilConfig

if TYPE_CHECKING:
    from tests.ingest.conftest import FramesReader


def read_all(folder: Path) -> list[int]:
    """The gray level of every frame the folder replays (each test image is one flat level)."""
    source = ReplaySource(str(folder), source_fps=10.0, realtime=False)
    source.open()
    levels = []
    while (frame := source.read()) is not None:
        levels.append(int(frame.image[0, 0, 0]))
    source.close()
    return levels


def test_numbered_names_replay_in_number_order(tmp_path: Path) -> None:
    for n in (1, 2, 3, 10, 11, 20, 100):
        cv2.imwrite(str(tmp_path / f"{n}.png"), np.full((8, 8, 3), n, np.uint8))
    assert read_all(tmp_path) == [1, 2, 3, 10, 11, 20, 100]  # plain order: 1, 10, 100, 11, 2, 20, 3


def test_names_without_numbers_keep_plain_order(tmp_path: Path) -> None:
    for level, name in enumerate(["b.png", "a.png", "C.png", "a_b.png"]):
        cv2.imwrite(str(tmp_path / name), np.full((8, 8, 3), level * 10, np.uint8))
    assert read_all(tmp_path) == [20, 10, 30, 0]  # C.png, a.png, a_b.png, b.png: sorted() order


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_unpadded_folder_replays_the_clip_in_order(
    vigil_config: VigilConfig,
    shared_data: Path,
    tmp_path: Path,
    frames_reader: Callable[[VigilConfig], FramesReader],
) -> None:
    originals = decoded_frames(shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4")
    for n, image in enumerate(originals, start=1):
        cv2.imwrite(str(tmp_path / f"{n}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    runner, _ = replay(vigil_config, tmp_path, realtime=False)
    assert runner.stats()[0].published == 71
    reader = frames_reader(vigil_config)
    assert reader.wait_for(lambda r: len(r) >= 71, 20.0)
    metas = [m for m, _, _ in reader.records]
    assert [m.frame_index for m in metas] == list(range(71))
    # Each published frame is the clip frame its index says: 10.jpg is frame_index 9, not 1.
    for meta, _, value in reader.records[::7]:
        image = cv2.imdecode(np.frombuffer(value, np.uint8), cv2.IMREAD_COLOR).astype(np.int16)
        errors = [np.abs(image - original).mean() for original in originals]
        assert int(np.argmin(errors)) == meta.frame_index
