"""Frame sources: live RTSP streams, recorded video files and image folders.

Every source has the same small interface (`FrameSource`): `open()`, `read()` and `close()`.
`read()` returns a `CapturedFrame`, `None` at the end of a recording, and raises `SourceError`
when a live stream is gone (the camera worker then reopens it with backoff).

OpenCV/FFmpeg facts this module is built around (opencv-python 4.9+/5.x):

* Open and read timeouts only work when passed to the `VideoCapture` constructor; `set()`
  after opening is ignored. A read that times out returns False.
* When the server dies, `read()` returns False but `isOpened()` stays True: a failed read is
  the only reliable "stream gone" signal, and the only cure is `release()` + a fresh open.
* FFmpeg demuxer options (RTSP transport, low-latency flags) can only be given through the
  process-global environment variable ``OPENCV_FFMPEG_CAPTURE_OPTIONS``, read during open.
  `_CaptureOptionsGate` sets it just before each open and lets cameras with the *same* options
  open concurrently while cameras with different options (tcp vs udp) wait for each other.
"""

from __future__ import annotations

import configparser
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vigil.errors import SourceError
from vigil.imagefolder import IMAGE_SUFFIXES, list_images
from vigil.redact import redact_url

log = logging.getLogger(__name__)

CAPTURE_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class CapturedFrame:
    """One decoded frame. `media_ns` is its position in the stream (replay: frame_index / true
    fps; RTSP: FFmpeg's presentation time), `frame_index` the source's 0-based frame number,
    `capture_ns` the wall clock (time.time_ns) when it was read.

    A video source decodes every frame (H.264 needs each one to decode the next) but converts it to
    BGR only when `image` is first read (`convert`): a frame the sampler drops costs its decode alone.
    The conversion was about a fifth of a 1920x1080 frame's decode here (1.1-1.4 of 5.9 CPU ms), and a
    camera at 25 fps sampled at 5 drops four frames in five. `image` must be read before the source's
    next `read()`, which replaces the decoded picture."""

    __slots__ = ("_convert", "_image", "capture_ns", "frame_index", "media_ns")

    def __init__(
        self,
        image: np.ndarray | None,
        media_ns: int,
        frame_index: int,
        capture_ns: int,
        convert: Callable[[], np.ndarray] | None = None,
    ) -> None:
        if image is None and convert is None:
            raise ValueError("a CapturedFrame needs its image or a way to convert it")
        self._image, self._convert = image, convert
        self.media_ns, self.frame_index, self.capture_ns = media_ns, frame_index, capture_ns

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            assert self._convert is not None  # the constructor holds one of the two
            self._image, self._convert = self._convert(), None
        return self._image

    @property
    def converted(self) -> bool:
        return self._image is not None


class _Grabber:
    """Decodes frames of a capture one by one (`grab`) and converts the current one to BGR on request."""

    def __init__(self, cap: cv2.VideoCapture, name: str) -> None:
        self.cap = cap
        self.name = name
        self.grabs = 0

    def grab(self) -> Callable[[], np.ndarray] | None:
        """The next frame's converter, or None when no frame came (end of a recording, a read timeout)."""
        if not self.cap.grab():
            return None
        self.grabs += 1
        grabbed = self.grabs

        def convert() -> np.ndarray:
            if self.grabs != grabbed:
                raise SourceError(f"{self.name}: frame {grabbed} converted after the next one was read")
            ok, image = self.cap.retrieve()
            if not ok or image is None:
                raise SourceError(f"{self.name}: a decoded frame could not be converted to BGR")
            return np.asarray(image)

        return convert


class FrameSource(Protocol):
    kind: str  # "rtsp" or "replay": the FrameMeta.source header
    name: str  # printable (redacted) name for logs and errors

    def open(self) -> None: ...
    def read(self) -> CapturedFrame | None: ...
    def close(self) -> None: ...


def decoder_params(threads: int) -> list[int]:
    """`VideoCapture` open parameters for `threads` decoder threads (0: FFmpeg's choice, one per core).

    One thread by default: FFmpeg's frame threading holds back a frame per extra thread (N threads,
    N-1 frames of delay on a live stream: 15 frames, 0.6 s at 25 fps, on a 16-core box) and costs
    more CPU per frame (the shared 640x480 MPEG-4 footage here: 0.58 CPU ms at one thread, 0.65 at
    two), and a box with several cameras already decodes them in parallel, one thread each."""
    return [cv2.CAP_PROP_N_THREADS, threads] if threads > 0 else []


def ffmpeg_capture_options(transport: str) -> str:
    """FFmpeg options for a live RTSP open: the transport, and no input buffering so a frame is
    handed over as soon as it is decoded (latency instead of smoothness, which is what detection
    wants). `|` separates options, `;` key and value (OpenCV's format)."""
    return f"rtsp_transport;{transport}|fflags;nobuffer|flags;low_delay"


class _CaptureOptionsGate:
    """Serialises the process-global FFmpeg options variable around opens.

    Any number of opens with the same options may run together; an open that needs other
    options waits until they finish. The previous value (e.g. one the operator exported) is
    restored when the last open leaves, so the process environment is only changed while opening.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: str | None = None
        self._users = 0
        self._saved: str | None = None

    @contextmanager
    def holding(self, options: str) -> Iterator[None]:
        with self._cond:
            while self._users and self._value != options:
                self._cond.wait()
            if self._users == 0:
                self._saved = os.environ.get(CAPTURE_OPTIONS_ENV)
                os.environ[CAPTURE_OPTIONS_ENV] = options
                self._value = options
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if self._users == 0:
                    if self._saved is None:
                        os.environ.pop(CAPTURE_OPTIONS_ENV, None)
                    else:
                        os.environ[CAPTURE_OPTIONS_ENV] = self._saved
                    self._value = None
                    self._cond.notify_all()


CAPTURE_OPTIONS_GATE = _CaptureOptionsGate()


class RtspSource:
    """A live RTSP (or HTTP) stream read with OpenCV's FFmpeg backend.

    `read()` raises `SourceError` when the stream is gone or frozen (no frame within
    `read_timeout_s`); the caller releases it and opens again. Nothing here retries: the
    reconnect policy lives in the camera worker so it can be tested with a fake clock.
    """

    kind = "rtsp"

    def __init__(
        self,
        url: str,
        transport: str = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        decode_threads: int = 1,
    ) -> None:
        self._url = url
        self._decode_threads = decode_threads
        self.name = redact_url(url)
        self._transport = transport
        self._open_timeout_ms = int(open_timeout_s * 1000)
        self._read_timeout_ms = int(read_timeout_s * 1000)
        self._grabber: _Grabber | None = None  # the open capture
        self._index = 0
        self._last_frame_mono: float | None = None

    def open(self) -> None:
        self.close()
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            self._open_timeout_ms,
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            self._read_timeout_ms,
            *decoder_params(self._decode_threads),
        ]
        started = time.monotonic()
        with CAPTURE_OPTIONS_GATE.holding(ffmpeg_capture_options(self._transport)):
            cap = cv2.VideoCapture(self._url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            elapsed = time.monotonic() - started
            why = "timed out" if elapsed * 1000 >= self._open_timeout_ms * 0.9 else "was refused or failed"
            raise SourceError(
                f"could not open {self.name} over {self._transport.upper()}: the open {why} after {elapsed:.1f}s "
                "(check the host and port are reachable, the stream path, and the user name and password)"
            )
        self._grabber = _Grabber(cap, self.name)
        self._last_frame_mono = None

    def read(self) -> CapturedFrame:
        if self._grabber is None:
            raise SourceError(f"{self.name} is not open")
        convert = self._grabber.grab()
        now_ns = time.time_ns()
        if convert is None:
            # isOpened() stays True after the server dies; a failed read is the signal.
            raise SourceError(
                f"no frame from {self.name} within {self._read_timeout_ms / 1000:.1f}s (stream ended or frozen)"
            )
        mono = time.monotonic()
        gap, self._last_frame_mono = (mono - (self._last_frame_mono or mono)), mono
        if gap * 1000 > self._read_timeout_ms:
            # FFmpeg's read timeout fires per packet wait; a stream that trickles a stale
            # buffered frame after freezing can hand one over late. A gap this long is a freeze.
            raise SourceError(
                f"{self.name} froze: {gap:.1f}s between frames (read timeout {self._read_timeout_ms / 1000:.1f}s)"
            )
        pos_ms = self._grabber.cap.get(cv2.CAP_PROP_POS_MSEC)
        frame = CapturedFrame(None, int(pos_ms * 1e6), self._index, now_ns, convert)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._grabber is not None:
            self._grabber.cap.release()
            self._grabber = None


def seqinfo_fps(path: Path) -> float | None:
    """The true frame rate from a MOTChallenge ``seqinfo.ini`` next to a clip or inside/next to
    an image folder; containers of converted footage often claim a wrong rate."""
    folder = path if path.is_dir() else path.parent
    for candidate in (folder / "seqinfo.ini", folder.parent / "seqinfo.ini"):
        if candidate.is_file():
            parser = configparser.ConfigParser()
            try:
                parser.read(candidate)
                rate = parser.getfloat("Sequence", "frameRate", fallback=0.0)
            except (configparser.Error, ValueError):
                continue
            if rate > 0:
                return rate
    return None


class ReplaySource:
    """A recording (anything FFmpeg reads, or a folder of image files in natural order: `2.jpg`
    before `10.jpg`, see `vigil.imagefolder`), replayed as a camera: paced at the true frame rate
    (`realtime`) or as fast as the caller reads.

    Frame numbers are the recording's own (0-based, counted from the file's first frame even
    with `start_frame`), and `media_ns = frame_index * 1e9 / fps`, so evaluation can match ground
    truth frame by frame. With `loop`, frame numbers restart at `start_frame` on every pass.
    """

    kind = "replay"

    def __init__(
        self,
        path: str,
        source_fps: float | None = None,
        realtime: bool = True,
        loop: bool = False,
        start_frame: int = 0,
        end_frame: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
        decode_threads: int = 1,
    ) -> None:
        self._path = Path(path)
        self._decode_threads = decode_threads
        self.name = redact_url(path)
        self._source_fps = source_fps
        self.realtime = realtime
        self.loop = loop
        self.start_frame = start_frame
        self.end_frame = end_frame
        self._clock = clock
        self._sleep = sleep
        self.fps = 0.0
        self.total_frames: int | None = None  # frames one pass publishes, if known
        self._grabber: _Grabber | None = None  # the open capture of a video file
        self._images: list[Path] = []
        self._next = 0
        self._pass_start: float | None = None

    # -- opening --------------------------------------------------------------------------------

    def open(self) -> None:
        self.close()
        if self._path.is_dir():
            self._images = list_images(self._path)
            if not self._images:
                raise SourceError(f"image folder {self.name} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            container_fps = None
            count: int | None = len(self._images)
        elif self._path.is_file():
            cap = self._capture()
            if not cap.isOpened():
                cap.release()
                raise SourceError(f"FFmpeg cannot read {self.name}: not a video file it knows")
            self._grabber = _Grabber(cap, self.name)
            container_fps = cap.get(cv2.CAP_PROP_FPS) or None
            frames = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            count = frames if frames > 0 else None
        else:
            raise SourceError(f"recording {self.name} does not exist (give a video file or an image folder)")
        fps = self._source_fps or seqinfo_fps(self._path) or container_fps
        if not fps or fps <= 0:
            fps = 25.0
            log.warning("%s: frame rate unknown, assuming 25 fps (set replay.source_fps)", self.name)
        self.fps = float(fps)
        if count is not None:
            end = min(count, self.end_frame) if self.end_frame is not None else count
            self.total_frames = max(0, end - self.start_frame)
            if self.start_frame >= count:
                raise SourceError(f"start_frame {self.start_frame} is past the end of {self.name} ({count} frames)")
        self._rewind()

    def _capture(self) -> cv2.VideoCapture:
        return cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG, decoder_params(self._decode_threads))

    @property
    def decoder_threads(self) -> int:
        """The decoder's thread count as FFmpeg set it (0 for an image folder or a closed source)."""
        return int(self._grabber.cap.get(cv2.CAP_PROP_N_THREADS)) if self._grabber is not None else 0

    def _rewind(self) -> None:
        self._next = self.start_frame
        self._pass_start = None
        if self._grabber is not None:
            if self._grabber.cap.get(cv2.CAP_PROP_POS_FRAMES) > 0:
                self._grabber.cap.release()
                self._grabber = _Grabber(self._capture(), self.name)
            # grab() instead of seeking: frame-exact on every container, decode cost only once.
            for _ in range(self.start_frame):
                if self._grabber.grab() is None:
                    break

    # -- reading --------------------------------------------------------------------------------

    def _decode_next(self) -> tuple[np.ndarray | None, Callable[[], np.ndarray] | None] | None:
        """(image, None) from an image folder, (None, its converter) from a video, None at the end."""
        if self.end_frame is not None and self._next >= self.end_frame:
            return None
        if self._grabber is not None:
            convert = self._grabber.grab()
            return None if convert is None else (None, convert)
        if self._next >= len(self._images):
            return None
        decoded = cv2.imread(str(self._images[self._next]), cv2.IMREAD_COLOR)
        if decoded is None:
            raise SourceError(f"cannot decode image {self._images[self._next].name} in {self.name}")
        return np.asarray(decoded), None

    def read(self) -> CapturedFrame | None:
        picture = self._decode_next()
        if picture is None:
            if not self.loop or self._next == self.start_frame:
                return None
            self._rewind()
            picture = self._decode_next()
            if picture is None:
                return None
        image, convert = picture
        index = self._next
        self._next += 1
        offset_s = (index - self.start_frame) / self.fps
        if self.realtime:
            now = self._clock()
            if self._pass_start is None:
                self._pass_start = now
            delay = self._pass_start + offset_s - now
            if delay > 0:
                self._sleep(delay)
        # Capture time is when vigil read the frame (latency is measured from it); the footage's own
        # clock travels as media_ns. A fast replay therefore compresses time for the tracker and rule
        # timers: replay paced (realtime) to see alert timing as live, as `vigil eval` does for its
        # aggregator by re-timing records to the footage.
        return CapturedFrame(image, round(index * 1e9 / self.fps), index, time.time_ns(), convert)

    def close(self) -> None:
        if self._grabber is not None:
            self._grabber.cap.release()
            self._grabber = None
        self._images = []
