"""One camera's pipeline: source -> fps sampler -> motion gate -> resize + JPEG -> publish queue,
and the reconnect state machine that keeps a live stream coming back forever.

The clock and the sleep are injected so the reconnect policy is unit-tested without waiting;
in production the sleep is `stop_event.wait`, so a stop request interrupts a backoff at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from ingest.metrics import CameraCounters
from ingest.motion import MotionDetector, MotionGate
from ingest.publisher import DropOldestQueue, OutgoingFrame, QueueClosed
from ingest.sampler import FpsSampler
from ingest.sources import CapturedFrame, FrameSource, ReplaySource, RtspSource
from vigil.config import CameraConfig
from vigil.contracts import FrameMeta
from vigil.errors import SourceError
from vigil.imaging import resize_down
from vigil.logs import REPEATS, log_repeated

log = logging.getLogger(__name__)


class FrameProcessingError(SourceError):
    """A decoded frame that could not be processed (OpenCV refused to resize or encode it, the
    motion detector got a shape it cannot use). Handled like a stream fault: a live camera is
    reopened with backoff, since a decoder handing out bad frames usually recovers on reconnect;
    a recording fails."""


@dataclass
class Backoff:
    """Exponential reconnect delay: initial, 2x, 4x, ... capped at `max_s`, each shortened by a
    random share of up to `jitter` so many cameras behind one failed switch do not reconnect in
    lock-step. `reset()` after a frame arrives again."""

    initial_s: float
    max_s: float
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next(self) -> float:
        base = min(self.max_s, self.initial_s * (2.0 ** min(self.attempt, 60)))
        self.attempt += 1
        return base * (1.0 - self.jitter * self.rng.random())

    def reset(self) -> None:
        self.attempt = 0


class FrameEncoder:
    """Resize to at most `max_width` (keeping the aspect ratio) and JPEG-encode.

    OpenCV's JPEG codec is libjpeg-turbo already; no optimisation passes (IMWRITE_JPEG_OPTIMIZE
    costs ~30% more CPU for ~5% fewer bytes, not worth it for frames that live an hour).
    """

    def __init__(self, max_width: int | None = None, quality: int = 85) -> None:
        self.max_width = max_width
        self._params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]

    def shape(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image to publish and its scale relative to the source (1.0: unchanged)."""
        width = image.shape[1]
        if self.max_width is None or width <= self.max_width:
            return image, 1.0
        scale = self.max_width / width
        height = max(1, round(image.shape[0] * scale))
        return resize_down(image, self.max_width, height), scale

    def encode(self, image: np.ndarray) -> bytes:
        ok, buffer = cv2.imencode(".jpg", image, self._params)
        if not ok:
            raise SourceError(f"JPEG encoding failed for an image of shape {image.shape}")
        return buffer.tobytes()


def make_source(camera: CameraConfig, realtime: bool | None = None) -> FrameSource:
    url = camera.url.get_secret_value()
    if camera.kind == "rtsp":
        return RtspSource(
            url, camera.rtsp_transport, camera.open_timeout_s, camera.read_timeout_s, camera.decode_threads
        )
    r = camera.replay
    return ReplaySource(
        url,
        source_fps=r.source_fps,
        realtime=r.realtime if realtime is None else realtime,
        loop=r.loop,
        start_frame=r.start_frame,
        end_frame=r.end_frame,
        decode_threads=camera.decode_threads,
    )


class CameraWorker:
    """Reads one camera in its own thread and feeds its publish queue.

    States: starting -> streaming <-> reconnecting (live) ; finished (a recording ended) ;
    failed (a recording cannot be read: not retried) ; stopped. Each transition is logged once;
    failed retries while a camera stays down are counted and logged as one line a minute
    (`vigil.logs.log_repeated`).
    """

    def __init__(
        self,
        camera_id: str,
        source: FrameSource,
        queue: DropOldestQueue[OutgoingFrame],
        counters: CameraCounters,
        *,
        sampler: FpsSampler,
        encoder: FrameEncoder,
        backoff: Backoff,
        motion: MotionDetector | None = None,
        motion_gate: MotionGate | None = None,
        publish_still: bool = False,
        stop_event: threading.Event | None = None,
        sleep: Callable[[float], object] | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.camera_id = camera_id
        self.source = source
        self.queue = queue
        self.counters = counters
        self.sampler = sampler
        self.encoder = encoder
        self.backoff = backoff
        self.motion = motion
        self.motion_gate = motion_gate
        # Frames without motion are published marked still (an empty `motion` header) instead of gated.
        self.publish_still = publish_still
        self.stop_event = stop_event or threading.Event()
        self._sleep = sleep or self.stop_event.wait
        self._clock_ns = clock_ns
        self._live = source.kind == "rtsp"
        self._seq = 0
        self._down_since: float | None = None  # monotonic time the live stream went down
        self._attempts = 0  # reconnect attempts in the current outage
        self._thread: threading.Thread | None = None
        self.delays: list[float] = []  # reconnect delays taken, for tests and diagnostics

    @classmethod
    def from_config(
        cls,
        camera: CameraConfig,
        queue: DropOldestQueue[OutgoingFrame],
        counters: CameraCounters,
        stop_event: threading.Event,
        *,
        source: FrameSource | None = None,
        sample_fps: float | None | bool = True,
    ) -> CameraWorker:
        """`sample_fps=True`: the camera's `fps`; None: every frame (replay for evaluation)."""
        motion = camera.motion
        return cls(
            camera.id,
            source or make_source(camera),
            queue,
            counters,
            sampler=FpsSampler(camera.fps if sample_fps is True else (sample_fps or None)),
            encoder=FrameEncoder(camera.max_width, camera.jpeg_quality),
            backoff=Backoff(camera.reconnect_initial_s, camera.reconnect_max_s),
            motion=MotionDetector(
                motion.downscale_width,
                motion.threshold,
                motion.min_area_fraction,
                masks=motion.masks,
                max_width=camera.max_width,
            )
            if motion.enabled
            else None,
            motion_gate=MotionGate(motion.keepalive_s) if motion.enabled else None,
            publish_still=motion.still_frames == "publish",
            stop_event=stop_event,
        )

    # -- thread ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"camera-{self.camera_id}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- state machine --------------------------------------------------------------------------

    def _set_state(self, state: str) -> None:
        self.counters.set_state(state)

    def _went_down(self, exc: SourceError, what: str) -> bool:
        """The one place a camera goes down. A recording fails for good (returns False); a live
        camera is marked reconnecting (returns True) and the caller waits its backoff. The first
        failure of an outage says what happens next; later ones are folded into a count a minute."""
        if not self._live:
            self._fail(exc)
            return False
        self._down_since = self._down_since or time.monotonic()
        self._attempts += 1
        reason = str(exc)
        self.counters.last_error = reason
        self.counters.attempt = self._attempts
        if self.counters.state != "reconnecting":
            self.counters.down_since_ns = time.time_ns()
            log_repeated(
                log, logging.WARNING, "reconnect", self.camera_id,
                "camera %s: %s: %s; reconnecting with backoff %.1fs..%.0fs, counting failed tries once a minute "
                "until it is back", self.camera_id, what, reason, self.backoff.initial_s, self.backoff.max_s,
            )  # fmt: skip
            self._set_state("reconnecting")
        else:
            log_repeated(
                log, logging.WARNING, "reconnect", self.camera_id,
                "camera %s: still down after %d tries: %s: %s", self.camera_id, self._attempts, what, reason,
            )  # fmt: skip
        return True

    def _came_up(self) -> None:
        self.backoff.reset()
        if self._down_since is not None:
            REPEATS.forget(self.camera_id, log)  # the line below says how many tries it took
            log.info(
                "camera %s: streaming again after %.1fs down, %d reconnect attempts",
                self.camera_id, time.monotonic() - self._down_since, self._attempts,
            )  # fmt: skip
        elif self.counters.state != "streaming":
            log.info("camera %s: streaming from %s", self.camera_id, self.source.name)
        self._down_since, self._attempts = None, 0
        self.counters.last_error = None
        self.counters.down_since_ns, self.counters.attempt = None, 0
        self._set_state("streaming")

    def run(self) -> None:
        REPEATS.forget(self.camera_id, log)  # a new run of the camera starts with a clean log history
        ended = False  # a clean exit; anything else escaping the loop leaves the camera "failed"
        try:
            while not self.stop_event.is_set():
                try:
                    self.source.open()
                except SourceError as exc:
                    if not self._went_down(exc, "cannot open"):
                        ended = True
                        return
                    self._wait_backoff()
                    continue
                streaming = False
                try:
                    while not self.stop_event.is_set():
                        frame = self.source.read()
                        if frame is None:
                            self._set_state("finished")
                            log.info("camera %s: %s ended", self.camera_id, self.source.name)
                            ended = True
                            return
                        self._process_guarded(frame)
                        # Up only once a frame got through: a stream whose every frame fails
                        # keeps its backoff growing and logs its outage once.
                        if not streaming:
                            streaming = True
                            self._came_up()
                except SourceError as exc:
                    if isinstance(exc, FrameProcessingError):
                        what = "frame processing failed"
                    else:
                        what = "stream lost" if streaming else "no frame after opening"
                    if not self._went_down(exc, what):
                        ended = True
                        return
                finally:
                    self.source.close()
                if not self.stop_event.is_set():
                    self._wait_backoff()
            ended = True
        except QueueClosed:
            ended = True  # shutting down while a replay waited for room
        finally:
            if not ended and self.counters.state not in ("finished", "failed"):
                # An unexpected error is on its way to threading's excepthook (traceback in the
                # log); the camera must not look merely stopped to /readyz and the exit status.
                self.counters.last_error = "capture thread crashed (traceback logged)"
                self._set_state("failed")
                log.error("camera %s: capture thread crashed; this camera is down until restart", self.camera_id)
            elif self.counters.state not in ("finished", "failed"):
                self._set_state("stopped")

    def _process_guarded(self, frame: CapturedFrame) -> None:
        """`process`, with the errors a bad frame can raise turned into a stream fault."""
        try:
            self.process(frame)
        except (cv2.error, ValueError) as exc:
            self.counters.inc("frame_errors")
            kind = "cv2.error" if isinstance(exc, cv2.error) else type(exc).__name__
            detail = " ".join(str(exc).split())  # cv2.error messages span several lines
            shape = frame.image.shape if frame.converted else "(not converted)"
            raise FrameProcessingError(
                f"frame {frame.frame_index} of shape {shape} from {self.source.name}: {kind}: {detail}"
            ) from exc

    def _wait_backoff(self) -> None:
        delay = self.backoff.next()
        self.delays.append(delay)
        self.counters.inc("reconnects")
        self._sleep(delay)

    def _fail(self, exc: SourceError) -> None:
        self.counters.last_error = str(exc)
        self._set_state("failed")
        log.error("camera %s: %s", self.camera_id, exc)

    # -- per frame ------------------------------------------------------------------------------

    def process(self, frame: CapturedFrame) -> None:
        """Sample, gate, encode and enqueue one frame."""
        self.counters.frame_read()
        # Live: arrival time on the monotonic clock (camera clocks and RTP timestamps restart
        # on reconnect and some cameras send none); replay: the media position, so sampling is
        # the same whether the replay is paced or fast.
        ts_ns = self._clock_ns() if self._live else frame.media_ns
        if not self.sampler.take(ts_ns):
            return
        self.counters.inc("sampled")
        boxes: tuple[tuple[int, int, int, int], ...] | None = None
        keepalive = False
        if self.motion is not None and self.motion_gate is not None:
            changes = self.motion.scene_changes
            found = self.motion.detect(frame.image)
            if self.motion.scene_changes != changes:
                # A new scene (lights, a cut in a recording) reports no motion, but nothing is where it was:
                # the whole frame counts as moved, so it is detected and never taken for a still frame.
                found = [(0, 0, frame.image.shape[1], frame.image.shape[0])]
            if not self.publish_still:
                send, keepalive = self.motion_gate.check(ts_ns, found)
                if not send:
                    self.counters.inc("motion_skipped")
                    return
            boxes = tuple(found)  # empty: a still frame (detect reuses the camera's last detections)
        image, scale = self.encoder.shape(frame.image)
        if boxes is not None and scale != 1.0:
            # Boxes travel in the pixels of the published image, the one detection sees.
            boxes = tuple((round(x1 * scale), round(y1 * scale), round(x2 * scale), round(y2 * scale))
                          for x1, y1, x2, y2 in boxes)  # fmt: skip
        meta = FrameMeta(
            camera_id=self.camera_id,
            seq=self._seq,
            capture_ns=frame.capture_ns,
            width=image.shape[1],
            height=image.shape[0],
            source="rtsp" if self._live else "replay",
            media_ns=frame.media_ns,
            frame_index=None if self._live else frame.frame_index,
            motion=boxes,
            keepalive=keepalive,
        )
        self._seq += 1
        dropped = self.queue.put(OutgoingFrame(meta, self.encoder.encode(image)))
        if dropped:
            self.counters.inc("dropped", dropped)
