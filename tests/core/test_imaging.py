"""Header-only image probing and bounded decoding (vigil.imaging): bombs are refused unread."""

from __future__ import annotations

import struct
import tracemalloc

import cv2
import numpy as np
import pytest

from vigil.errors import ContractError
from vigil.imaging import (
    OversizedImageError,
    decode_image,
    encode_jpeg,
    probe_image,
    reduction_for,
)


def _jpeg(width: int, height: int, **params: int) -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    flags = [cv2.IMWRITE_JPEG_PROGRESSIVE, params.get("progressive", 0)]
    ok, data = cv2.imencode(".jpg", image, flags)
    assert ok
    return data.tobytes()


def _with_declared_size(jpeg: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its SOF0 size rewritten: a few KB that claim width x height pixels."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9 :]


@pytest.mark.parametrize(("width", "height"), [(640, 480), (33, 17), (1920, 1080)])
def test_probe_reads_jpeg_and_png_size(width: int, height: int) -> None:
    info = probe_image(_jpeg(width, height))
    assert (info.format, info.width, info.height) == ("jpeg", width, height)
    ok, png = cv2.imencode(".png", np.zeros((height, width, 3), np.uint8))
    assert ok
    info = probe_image(png.tobytes())
    assert (info.format, info.width, info.height) == ("png", width, height)


def test_probe_reads_progressive_jpeg_with_exif_first() -> None:
    data = _jpeg(320, 200, progressive=1)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 30) + b"Exif\x00\x00" + bytes(24)
    info = probe_image(data[:2] + app1 + data[2:])
    assert (info.width, info.height) == (320, 200)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"GIF89a....", "neither JPEG nor PNG"),
        (b"\xff\xd8\xff\xda\x00\x08", "no frame header"),
        (b"\xff\xd8\x00\x00", "corrupt"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDX", "IHDR"),
    ],
)
def test_probe_refuses_what_it_cannot_read(data: bytes, words: str) -> None:
    with pytest.raises(ContractError, match=words):
        probe_image(data)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _with_declared_size(_jpeg(64, 64), 30000, 30000)
    assert len(bomb) < 20_000
    tracemalloc.start()
    try:
        with pytest.raises(OversizedImageError, match=r"30000x30000 = 900\.0 MP.*detect\.max_pixels"):
            decode_image(bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"refusing a bomb allocated {peak} bytes"
    assert OversizedImageError.reason == "oversized_image"


def test_size_disagreeing_with_headers_is_refused() -> None:
    data = _jpeg(64, 48)
    assert decode_image(data, expect_wh=(64, 48)).shape == (48, 64, 3)
    with pytest.raises(ContractError, match="64x48 but its headers declare 640x480"):
        decode_image(data, expect_wh=(640, 480))


def test_reduced_decode_is_a_dct_downscale() -> None:
    data = _jpeg(1280, 960)
    info = probe_image(data)
    assert reduction_for(info, 416, 416) == 2
    assert reduction_for(info, 160, 120) == 8
    assert reduction_for(info, 1280, 960) == 1
    assert decode_image(data, reduce=2).shape == (480, 640, 3)
    with pytest.raises(ContractError, match="reduce must be"):
        decode_image(data, reduce=3)


def test_encode_round_trip_and_limits() -> None:
    image = np.full((10, 20, 3), 200, np.uint8)
    data = encode_jpeg(image, 90)
    assert decode_image(data).shape == (10, 20, 3)
    with pytest.raises(ContractError, match="larger than the limit"):
        decode_image(data, max_bytes=10)
    with pytest.raises(ContractError, match="no bytes"):
        decode_image(b"")
