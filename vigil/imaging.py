"""Image bytes in, pixels out, with the size checked before any memory is spent on it.

A JPEG of a few kilobytes can declare 30000x30000 pixels; decoding it costs gigabytes. `probe_image`
reads the dimensions from the header alone (JPEG's SOF marker, PNG's IHDR chunk) and `decode_image`
refuses anything over `max_pixels` before OpenCV allocates the frame. Every stage that decodes
untrusted bytes (detect workers, `vigil serve`, `vigil web`) goes through here. `probe_prefix` decides
from the first bytes of a body still arriving, and `BoundedDecoder` caps how many decoded images are
alive at once, so peak memory is at most `concurrency x max_pixels x 3` bytes whatever the request rate.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from vigil.config.detect import DEFAULT_MAX_PIXELS as DEFAULT_MAX_PIXELS  # re-exported: the default of max_pixels
from vigil.errors import ContractError

ImageFormat = Literal["jpeg", "png"]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carrying the image size: baseline, extended, progressive, lossless, and
# their arithmetic-coded forms (0xC4 DHT, 0xC8 JPG and 0xCC DAC are not frames).
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length field: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_REDUCED = {
    1: cv2.IMREAD_COLOR,
    2: cv2.IMREAD_REDUCED_COLOR_2,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    8: cv2.IMREAD_REDUCED_COLOR_8,
}


class OversizedImageError(ContractError):
    """The image declares more pixels than allowed. Workers dead-letter it as `oversized_image`;
    HTTP servers answer 413."""

    reason = "oversized_image"


class ImageSizeMismatchError(ContractError):
    """The image's own size differs from the size its sender declared (a frame's width/height headers)."""

    reason = "size_mismatch"


class _Truncated(Exception):
    """The bytes end before the image's size is known (only `probe_prefix` asks to be told)."""


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def _jpeg_size(data: bytes | bytearray, partial: bool = False) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment; walks the segments, never the pixels.
    `partial`: `data` is a prefix; running out of it raises `_Truncated` instead of `ContractError`."""
    pos, end = 2, len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise ContractError(f"JPEG is corrupt: expected a marker at byte {pos}")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image, start of scan: no frame header came first
            raise ContractError("JPEG has no frame header (SOF) before its image data; the file is corrupt")
        if pos + 2 > end:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ContractError(f"JPEG is corrupt: segment 0x{marker:02X} has length {length}")
        if marker in _SOF_MARKERS:
            if pos + 7 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            if width == 0 or height == 0:
                raise ContractError(f"JPEG declares a {width}x{height} frame; zero sizes are not supported")
            return int(width), int(height)
        pos += length
    if partial:
        raise _Truncated
    raise ContractError("JPEG has no frame header (SOF) before its image data; the file is truncated or corrupt")


def probe_image(data: bytes | bytearray) -> ImageInfo:
    """Format and size from the header alone. Raises `ContractError` for anything but JPEG or PNG."""
    return _probe(data, partial=False)


def probe_prefix(data: bytes | bytearray) -> ImageInfo | None:
    """Like `probe_image` on the first bytes of an image still arriving: None while they end before
    its size is known, so a server can refuse a bomb without reading (or holding) the rest."""
    try:
        return _probe(data, partial=True)
    except _Truncated:
        return None


def _probe(data: bytes | bytearray, partial: bool) -> ImageInfo:
    if partial and len(data) < 24 and (b"\xff\xd8".startswith(data[:2]) or _PNG_SIGNATURE.startswith(data[:8])):
        if len(data) < 2 or data[:2] != b"\xff\xd8":  # too short to tell, or a PNG before its IHDR size
            raise _Truncated
    if data[:2] == b"\xff\xd8":
        width, height = _jpeg_size(data, partial)
        return ImageInfo("jpeg", width, height)
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ContractError("PNG is corrupt: its first chunk is not IHDR")
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise ContractError(f"PNG declares a {width}x{height} image; zero sizes are not supported")
        return ImageInfo("png", int(width), int(height))
    raise ContractError(f"image is neither JPEG nor PNG (starts with {data[:4]!r}); send JPEG or PNG bytes")


def check_size(info: ImageInfo, max_pixels: int, setting: str = "detect.max_pixels") -> None:
    if info.pixels > max_pixels:
        raise OversizedImageError(
            f"image declares {info.width}x{info.height} = {info.pixels / 1e6:.1f} MP, over {setting}="
            f"{max_pixels} ({max_pixels / 1e6:.1f} MP); downscale it at the source or raise {setting}"
        )


def reduction_for(info: ImageInfo, target_w: int, target_h: int) -> int:
    """The largest JPEG DCT-domain downscale (1, 2, 4 or 8) that still leaves the image at least
    `target_w` x `target_h` pixels; 1 for PNG, which has no such shortcut."""
    if info.format != "jpeg":
        return 1
    factor = 1
    while factor < 8 and info.width // (factor * 2) >= target_w and info.height // (factor * 2) >= target_h:
        factor *= 2
    return factor


def check_image(
    data: bytes | bytearray | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    max_bytes: int | None = None,
    expect_wh: tuple[int, int] | None = None,
    setting: str = "detect.max_pixels",
) -> ImageInfo:
    """Every check of `decode_image` that needs only the header: bytes present and within `max_bytes`,
    a JPEG or PNG of at most `max_pixels`, as large as `expect_wh` when given."""
    if not data:
        raise ContractError("image has no bytes")
    if max_bytes is not None and len(data) > max_bytes:
        raise ContractError(f"image is {len(data)} bytes, larger than the limit of {max_bytes} bytes")
    info = probe_image(data)
    check_size(info, max_pixels, setting)
    if expect_wh is not None and (info.width, info.height) != expect_wh:
        raise ImageSizeMismatchError(
            f"image is {info.width}x{info.height} but its headers declare {expect_wh[0]}x{expect_wh[1]}"
        )
    return info


def decode_image(
    data: bytes | bytearray | None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    max_bytes: int | None = None,
    expect_wh: tuple[int, int] | None = None,
    reduce: int = 1,
    setting: str = "detect.max_pixels",
) -> npt.NDArray[np.uint8]:
    """JPEG or PNG bytes -> BGR uint8 (H, W, 3), refusing oversized images before decoding.

    `expect_wh`: the size the sender declared (a frame's width/height headers); an image of any
    other size is refused, so no stage trusts a header that disagrees with the pixels. `reduce`
    (1, 2, 4, 8) decodes a JPEG at that fraction of its size in the DCT domain, much cheaper than
    decoding in full and resizing."""
    info = check_image(data, max_pixels, max_bytes=max_bytes, expect_wh=expect_wh, setting=setting)
    assert data is not None  # checked
    flag = _REDUCED.get(reduce if info.format == "jpeg" else 1)
    if flag is None:
        raise ContractError(f"reduce must be 1, 2, 4 or 8, got {reduce}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    if image is None:
        raise ContractError(f"image of {len(data)} bytes ({info.format}, {info.width}x{info.height}) does not decode")
    return np.asarray(image, dtype=np.uint8)


class BoundedDecoder:
    """`decode_image` with at most `concurrency` decoded images alive at once.

        with decoder.decoded(body) as image:   # waits for a slot; the image must not outlive the block
            detections = detector([image])[0]

    The size is checked against `max_pixels` before waiting, so a bomb is refused at once and never
    holds a slot; an accepted image holds its slot until the block ends (its caller is done with the
    pixels), which bounds memory to `concurrency x max_pixels x 3` bytes however many callers wait."""

    def __init__(self, max_pixels: int, concurrency: int, setting: str = "detect.max_pixels") -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.max_pixels = max_pixels
        self.concurrency = concurrency
        self.setting = setting
        self._slots = threading.BoundedSemaphore(concurrency)

    @contextmanager
    def decoded(
        self,
        data: bytes | bytearray | None,
        *,
        expect_wh: tuple[int, int] | None = None,
        max_bytes: int | None = None,
        reduce: int = 1,
    ) -> Iterator[npt.NDArray[np.uint8]]:
        """`reduce` as in `decode_image`: `expect_wh` is still checked against the image's full size."""
        check_image(data, self.max_pixels, max_bytes=max_bytes, expect_wh=expect_wh, setting=self.setting)
        with self._slots:
            yield decode_image(
                data, self.max_pixels, max_bytes=max_bytes, expect_wh=expect_wh, reduce=reduce, setting=self.setting
            )


def encode_jpeg(image: npt.NDArray[np.uint8], quality: int = 85) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ContractError(f"could not encode an image of shape {image.shape} as JPEG")
    return bytes(encoded.tobytes())


def resize_down(image: npt.NDArray[np.uint8], width: int, height: int) -> npt.NDArray[np.uint8]:
    """`image` scaled down to `width` x `height`, with the cheapest filters that do not alias.

    Area averaging is what a reduction by 2x or more needs (a bilinear tap skips source pixels there), but
    OpenCV's `INTER_AREA` is fast only for an exact 2x: any other ratio takes a generic path, 7-30x the cost
    of `INTER_LINEAR` (640x480 -> 416x312: 1.2-1.9 ms against 0.17; 1920x1080 -> 416x234: 4.7-5.1 ms, more
    than the JPEG encode of the full frame). So the image is halved by 2x2 averaging while it is still at
    least twice the target (an odd last row or column is dropped first: an exact 2x needs even sides, and it
    moves the picture by under half a target pixel), and one bilinear step under 2x finishes, where each
    output pixel's footprint still covers every source pixel. 1920x1080 -> 416x234 takes 0.65 ms that way,
    within 1.6 grey levels (mean) of area averaging; 640x480 -> 416x312 within 0.9. A target larger than the
    image (the clip writer's fixed size when a camera's frames grew mid-clip) is bilinear too."""
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}")
    if width < 1 or height < 1:
        raise ValueError(f"target size must be positive, got {width}x{height}")
    while image.shape[1] >= 2 * width and image.shape[0] >= 2 * height:
        source_h, source_w = image.shape[:2]
        even = image[: source_h - source_h % 2, : source_w - source_w % 2]
        image = np.asarray(cv2.resize(even, (source_w // 2, source_h // 2), interpolation=cv2.INTER_AREA), np.uint8)
    source_h, source_w = image.shape[:2]
    if (width, height) == (source_w, source_h):
        return image
    # Left at 2x or more on one side only when the target's aspect differs that much from the image's.
    under_2x = width * 2 > source_w and height * 2 > source_h
    interpolation = cv2.INTER_LINEAR if under_2x else cv2.INTER_AREA
    return np.asarray(cv2.resize(image, (width, height), interpolation=interpolation), dtype=np.uint8)
