"""An image folder as a recording: which files are frames, and in which order.

Replay (`ingest`) and evaluation (`vigil eval`) must agree on the order, so it lives here. Frames
are sorted in *natural* order: runs of digits compare as numbers, so `2.jpg` comes before
`10.jpg` and unpadded frame numbers (`1.jpg … 177.jpg`) replay in frame order. Names without
digits, and zero-padded names, sort exactly as plain string order does.
"""

from __future__ import annotations

import re
from pathlib import Path

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key: the name split into text and numbers (`frame_10.jpg` -> 'frame_', 10, '.jpg').

    `re.split` with a group always alternates text, number, text, ..., so two keys compare text
    with text and numbers with numbers. The name itself breaks ties (`01.jpg` and `1.jpg`)."""
    parts = _DIGITS.split(name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def list_images(folder: Path) -> list[Path]:
    """The image files directly inside `folder` (by suffix, any case), in natural order."""
    images = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(images, key=lambda p: natural_key(p.name))
