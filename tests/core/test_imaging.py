"""Header-only image probing and bounded decoding (vigil.imaging): bombs are refused unread."""

from __future__ import annotations

import struct
import threading
import tracemalloc

import cv2
import numpy as np
import pytest

from vigil.errors import ContractError
from vigil.imaging import (
    BoundedDecoder,
    ImageSizeMismatchError,
    OversizedImageError,
    decode_image,
    encode_jpeg,
    probe_image,
    probe_prefix,
    reduction_for,
    resize_down,
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


def test_probe_prefix_waits_for_the_header_then_judges() -> None:
    data = _jpeg(320, 200, progressive=1)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + 30_000) + bytes(30_000)  # EXIF pushes the frame header 30 KB in
    data = data[:2] + app1 + data[2:]
    sof = data.index(b"\xff\xc2")
    for cut in (0, 1, 2, 3, 1000, sof, sof + 6):
        assert probe_prefix(data[:cut]) is None, cut
    info = probe_prefix(data[: sof + 9])
    assert info is not None and (info.width, info.height) == (320, 200)
    ok, png = cv2.imencode(".png", np.zeros((5, 7, 3), np.uint8))
    assert probe_prefix(png.tobytes()[:20]) is None
    assert probe_prefix(png.tobytes()[:24]) == probe_image(png.tobytes())
    with pytest.raises(ContractError, match="neither JPEG nor PNG"):
        probe_prefix(b"GIF89a")
    with pytest.raises(ContractError, match="no frame header"):
        probe_prefix(b"\xff\xd8\xff\xda\x00\x08")


def test_bounded_decoder_caps_live_images_and_refuses_bombs_without_a_slot() -> None:
    decoder = BoundedDecoder(max_pixels=1000 * 1000, concurrency=2)
    data = _jpeg(64, 48)
    inside, release = threading.Semaphore(0), threading.Event()
    live, peak, lock = [0], [0], threading.Lock()

    def hold() -> None:
        with decoder.decoded(data, expect_wh=(64, 48)) as image:
            assert image.shape == (48, 64, 3)
            with lock:
                live[0] += 1
                peak[0] = max(peak[0], live[0])
            inside.release()
            release.wait(10)
            with lock:
                live[0] -= 1

    threads = [threading.Thread(target=hold) for _ in range(5)]
    for thread in threads:
        thread.start()
    assert inside.acquire(timeout=10) and inside.acquire(timeout=10)
    assert not inside.acquire(timeout=0.5), "a third image was decoded while two held their slots"
    # Every slot is taken, yet a bomb and a frame that disagrees with its headers are refused at once.
    with pytest.raises(OversizedImageError):
        with decoder.decoded(_with_declared_size(data, 30000, 30000)):
            pass
    with pytest.raises(ImageSizeMismatchError, match="64x48 but its headers declare 640x480"):
        with decoder.decoded(data, expect_wh=(640, 480)):
            pass
    release.set()
    for thread in threads:
        thread.join(10)
    assert peak[0] == 2 and live[0] == 0


def test_resize_down_averages_at_2x_and_more_and_matches_area_averaging_under_it() -> None:
    rng = np.random.default_rng(7)
    # A one-pixel white stripe every 4 columns: a 4x reduction that samples between source pixels
    # (bilinear) misses every stripe and comes out black; area averaging comes out a quarter grey.
    stripes = np.zeros((480, 640), np.uint8)
    stripes[:, ::4] = 255
    quarter = resize_down(stripes, 160, 120)
    assert quarter.shape == (120, 160)
    assert np.abs(quarter.astype(int) - 64).max() <= 1
    # Under 2x: bilinear, within a grey level or two of area averaging on a natural-looking image.
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (7, 7), 0)
    scaled = resize_down(smooth, 416, 312)
    area = cv2.resize(smooth, (416, 312), interpolation=cv2.INTER_AREA)
    assert scaled.shape == (312, 416, 3) and scaled.dtype == np.uint8
    assert np.abs(scaled.astype(int) - area.astype(int)).mean() < 2
    assert resize_down(smooth, 640, 480) is smooth  # nothing to do


@pytest.mark.parametrize(("source", "target"), [((1920, 1080), (416, 234)), ((1921, 1081), (320, 180))])
def test_resize_down_by_any_large_ratio_halves_then_averages_every_source_pixel(
    source: tuple[int, int], target: tuple[int, int]
) -> None:
    # A large camera to detection width: halved by 2x2 averaging (OpenCV's fast path) and finished under 2x;
    # odd sides lose their last row or column first. No source column may be skipped: one-pixel stripes every
    # 6 columns come out as their average everywhere, not black in places.
    width, height = source
    stripes = np.zeros((height, width), np.uint8)
    stripes[:, ::6] = 255
    reduced = resize_down(stripes, *target)
    assert reduced.shape == (target[1], target[0])
    assert abs(reduced.mean() - 255 / 6) < 3 and reduced.min() > 0
    rng = np.random.default_rng(11)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 4)
    area = cv2.resize(smooth, target, interpolation=cv2.INTER_AREA)
    assert np.abs(resize_down(smooth, *target).astype(int) - area.astype(int)).mean() < 2


@pytest.mark.parametrize(("shape", "size", "message"), [((4,), (2, 2), "HxW"), ((8, 8), (0, 4), "positive")])
def test_resize_down_names_what_was_wrong(shape: tuple[int, ...], size: tuple[int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resize_down(np.zeros(shape, np.uint8), *size)
