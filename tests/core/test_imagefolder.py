"""Natural order of image folders (vigil.imagefolder), shared by replay and evaluation."""

from __future__ import annotations

import random
from pathlib import Path

from vigil.imagefolder import list_images, natural_key


def test_numbers_compare_as_numbers() -> None:
    names = [
        "10.jpg",
        "2.jpg",
        "1.jpg",
        "100.jpg",
        "frame_10.png",
        "frame_9.png",
        "cam2_frame_3.jpg",
        "cam10_frame_1.jpg",
    ]
    assert sorted(names, key=natural_key) == [
        "1.jpg", "2.jpg", "10.jpg", "100.jpg", "cam2_frame_3.jpg", "cam10_frame_1.jpg", "frame_9.png", "frame_10.png",
    ]  # fmt: skip


def test_plain_order_where_it_was_already_right() -> None:
    """Names without digits, and zero-padded numbers, sort as sorted() sorts them."""
    rng = random.Random(7)
    for names in (
        ["alpha.jpg", "Beta.jpg", "beta.jpg", "gamma_delta.png", "a.jpg", "a_b.jpg", "é.jpg"],
        [f"{n:06d}.jpg" for n in range(0, 300, 7)],
        [f"img_{n:04d}.png" for n in range(50)],
    ):
        shuffled = names[:]
        rng.shuffle(shuffled)
        assert sorted(shuffled, key=natural_key) == sorted(names)
    assert sorted(["01.jpg", "1.jpg", "001.jpg"], key=natural_key) == ["001.jpg", "01.jpg", "1.jpg"]  # ties: by name


def test_list_images_takes_images_only(tmp_path: Path) -> None:
    for name in ("3.JPG", "20.png", "1.jpeg", "notes.txt", "gt.json"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "5.jpg").mkdir()  # a folder, whatever its name
    assert [p.name for p in list_images(tmp_path)] == ["1.jpeg", "3.JPG", "20.png"]
