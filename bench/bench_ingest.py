"""Ingest benchmark: throughput, CPU per camera, and what motion gating saves.

    VIGIL_TEST_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/bench_ingest.py [--seconds 8]

1. Throughput (frames/s) of one ingest process reading + encoding + publishing every frame of a
   640x480 clip (the shared TUD-Stadtmitte footage) and of a 1920x1080 clip (the same footage
   upscaled and written to a temporary MPEG-4 file), as a ratio against a baseline in the same
   process: a bare `cv2.VideoCapture.read()` + `cv2.imencode` loop over the same file, no Kafka.
2. CPU % of one camera at the default 5 fps: a paced replay at the true 25 fps (every frame is
   decoded, as with a live camera; 5 per second are encoded and published), process CPU time
   over wall time, with and without motion gating.
3. Share of sampled frames motion gating keeps from detection on both shared clips.
4. Decoder threads (`cameras[].decode_threads`): CPU per decoded frame at 1 thread versus FFmpeg's choice (one
   per core), on both clips.
5. The delay decoder threads add on a live stream: H.264 packets written to a FIFO at 25 fps (PyAV, libx264
   zero-latency, MPEG-TS flushed per packet), each frame's read time minus its packet's write time, as a
   difference against 1 thread in the same process.
6. Detection-width frames (`cameras[].max_width=416`): process CPU per frame of ingest's `FrameEncoder` (resize
   and JPEG encode) against the encode of the full frame (what ingest does without `max_width`), and its resize
   (`vigil.imaging.resize_down`) against OpenCV's `INTER_AREA` straight to the target, on frames of both clips.

Ends with one JSON line of its figures: {"bench": "ingest", "throughput_fps_640x480", "throughput_vs_bare_640x480",
..., "decode_cpu_ms_640x480", ..., "live_delay_ms", "delay_per_extra_thread_ms",
"detect_width_cpu_ms_<size>": {"full_encode", "resize_encode", "resize", "area_resize"}}.

Other processes share the CPUs: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _broker import broker_for_bench
from prometheus_client import CollectorRegistry

from ingest.camera import Backoff, CameraWorker, FrameEncoder
from ingest.metrics import CameraCounters, IngestMetrics
from ingest.motion import MotionDetector, MotionGate
from ingest.publisher import DropOldestQueue, OutgoingFrame, QueueClosed
from ingest.runner import IngestRunner
from ingest.sampler import FpsSampler
from ingest.sources import ReplaySource, decoder_params
from vigil.config import CameraConfig, VigilConfig
from vigil.imaging import resize_down
from vigil.kafka import ensure_topics, make_producer

FOOTAGE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "footage"
CLIPS = {name: FOOTAGE / name / f"{name}.mp4" for name in ("TUD-Campus", "TUD-Stadtmitte")}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_1080p(source: Path, target: Path) -> Path:
    cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG)
    writer = cv2.VideoWriter(str(target), cv2.VideoWriter.fourcc(*"mp4v"), 25.0, (1920, 1080))
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        writer.write(cv2.resize(frame, (1920, 1080), interpolation=cv2.INTER_LINEAR))
    cap.release()
    writer.release()
    return target


def baseline_fps(path: Path, seconds: float, quality: int = 85) -> float:
    """Bare OpenCV: decode + JPEG-encode every frame, looping the file, no Kafka."""
    frames = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        while time.monotonic() - started < seconds:
            ok, frame = cap.read()
            if not ok:
                break
            cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
            frames += 1
        cap.release()
    return frames / (time.monotonic() - started)


def camera_config(camera_id: str, path: Path, realtime: bool, fps: float = 5.0, motion: bool = False) -> CameraConfig:
    return CameraConfig.model_validate(
        {
            "id": camera_id,
            "url": str(path),
            "kind": "replay",
            "fps": fps,
            "queue_size": 8,
            "replay": {"realtime": realtime, "loop": True},
            "motion": {"enabled": motion},
        }
    )


def pipeline(
    config: VigilConfig, camera: CameraConfig, seconds: float, sample_fps: float | None | bool
) -> tuple[float, float, int]:
    """Full ingest (lossless replay -> Kafka) for `seconds`: (frames read/s, CPU %, published)."""
    producer = make_producer(config.kafka, "bench")
    runner = IngestRunner(
        [camera], producer, config.topics.frames.name, IngestMetrics(CollectorRegistry()),
        lossless=True, sample_fps=sample_fps,
    )  # fmt: skip
    cpu0, wall0 = cpu_s(), time.monotonic()
    runner.start()
    time.sleep(seconds)
    stats = runner.stop()[0]
    cpu, wall = cpu_s() - cpu0, time.monotonic() - wall0
    producer.close(timeout=5)
    return stats.read / wall, 100.0 * cpu / wall, stats.published


def motion_share(path: Path, fps: float | None) -> tuple[int, int, int]:
    """(sampled, skipped, keep-alives) for one pass over a clip with default motion settings."""
    queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(100_000)
    counters = CameraCounters("bench")
    worker = CameraWorker(
        "bench", ReplaySource(str(path), realtime=False), queue, counters,
        sampler=FpsSampler(fps), encoder=FrameEncoder(), backoff=Backoff(0.1, 1.0),
        motion=MotionDetector(), motion_gate=MotionGate(10.0), stop_event=threading.Event(),
    )  # fmt: skip
    worker.run()
    keepalives = 0
    queue.close()
    while True:
        try:
            item = queue.get(timeout=0)
        except QueueClosed:
            break
        keepalives += bool(item and item.meta.keepalive)
    return counters.get("sampled"), counters.get("motion_skipped"), keepalives


def decode_cpu_ms(path: Path, threads: int, rounds: int = 3) -> float:
    """CPU ms per decoded frame (every thread of the process) at `threads` decoder threads, best of `rounds`."""
    best = float("inf")
    for _ in range(rounds):
        cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, decoder_params(threads))
        frames, started = 0, time.process_time()
        while cap.grab() and cap.retrieve()[0]:
            frames += 1
        cap.release()
        best = min(best, (time.process_time() - started) * 1000 / max(1, frames))
    return best


def live_delay_ms(frames: list[np.ndarray], threads: int, fps: float = 25.0) -> float:
    """Median delay from writing a frame's H.264 packet to reading the frame back, on a stream paced at `fps`."""
    import av  # the web extra's PyAV: an encoder that hands over each packet at once (zero-latency tune)

    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "live.ts"
        os.mkfifo(fifo)
        written: list[float] = []

        def write() -> None:
            with open(fifo, "wb", buffering=0) as raw:
                out = av.open(raw, "w", format="mpegts", options={"flush_packets": "1"})
                stream = out.add_stream(
                    "libx264", rate=int(fps), options={"preset": "ultrafast", "tune": "zerolatency"}
                )
                stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
                for image in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                        out.mux(packet)
                    written.append(time.perf_counter())
                    time.sleep(1 / fps)
                for packet in stream.encode(None):
                    out.mux(packet)
                out.close()

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        cap = cv2.VideoCapture(str(fifo), cv2.CAP_FFMPEG, decoder_params(threads))
        read: list[float] = []
        while cap.read()[0]:
            read.append(time.perf_counter())
        cap.release()
        writer.join()
    # The first frames wait for the stream to be probed; the steady state is what a live camera sees.
    steady = [(r - w) * 1000 for r, w in zip(read[20:], written[20:], strict=False)]
    return statistics.median(steady)


def detect_width_cpu_ms(frames: list[np.ndarray], width: int = 416, rounds: int = 3) -> dict[str, float]:
    """Process CPU ms per frame (OpenCV may use several threads) of each way to publish a frame, best of rounds."""
    narrow = FrameEncoder(max_width=width)
    full = FrameEncoder()
    height = round(frames[0].shape[0] * width / frames[0].shape[1])
    ways = {
        "full_encode": lambda f: full.encode(f),
        "resize_encode": lambda f: narrow.encode(narrow.shape(f)[0]),
        "resize": lambda f: resize_down(f, width, height),
        "area_resize": lambda f: cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA),
    }
    best = {name: float("inf") for name in ways}
    for _ in range(rounds):
        for name, way in ways.items():  # interleaved, so drift hits every way alike
            started = cpu_s()
            for frame in frames:
                way(frame)
            best[name] = min(best[name], 1000 * (cpu_s() - started) / len(frames))
    return best


def static_scene_share(path: Path, seconds: float = 60.0) -> tuple[int, int]:
    """(sampled, skipped) on a static scene: the clip's first frame held with sensor noise (sigma 2)."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    ok, first = cap.read()
    cap.release()
    rng = np.random.default_rng(0)
    sampler, detector, gate = FpsSampler(5.0), MotionDetector(), MotionGate(10.0)
    sampled = skipped = 0
    for index in range(int(seconds * 25)):
        ts = index * 40_000_000
        if not sampler.take(ts):
            continue
        sampled += 1
        noisy = np.clip(first.astype(np.int16) + rng.normal(0, 2, first.shape).astype(np.int16), 0, 255).astype(
            np.uint8
        )
        send, _ = gate.check(ts, detector.detect(noisy))
        skipped += not send
    return sampled, skipped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("VIGIL_TEST_BOOTSTRAP"),
        help="a running broker (default: start the embedded broker for the run)",
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput/CPU run")
    args = parser.parse_args()
    with broker_for_bench(args.bootstrap) as bootstrap:
        return run(args, bootstrap)


def run(args: argparse.Namespace, bootstrap: str) -> int:
    suffix = f"{os.getpid()}-{int(time.time())}"
    config = VigilConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": [bootstrap]},
            "topics": {"frames": {"name": f"bench-ingest-{suffix}.frames", "partitions": 1, "retention_ms": 600_000}},
        }
    )
    ensure_topics(config.kafka, [config.topics.frames])
    print(f"load average before: {os.getloadavg()}  (cpus: {os.cpu_count()})")
    figures: dict[str, object] = {"bench": "ingest"}
    with tempfile.TemporaryDirectory() as tmp:
        clips = {
            "640x480": CLIPS["TUD-Stadtmitte"],
            "1920x1080": make_1080p(CLIPS["TUD-Stadtmitte"], Path(tmp) / "hd.mp4"),
        }
        print("\n# 1. throughput, every frame: read + encode + publish (lossless, acks=all) vs bare read + imencode")
        for size, path in clips.items():
            base = baseline_fps(path, args.seconds)
            fps, cpu, published = pipeline(
                config, camera_config(f"tp-{size}", path, realtime=False), args.seconds, None
            )
            print(f"{size:>9}: baseline {base:7.1f} fps | ingest {fps:7.1f} fps ({published} published) | "
                  f"ratio {fps / base:.2f} | CPU {cpu:.0f}%")  # fmt: skip
            figures[f"throughput_fps_{size}"] = round(fps, 1)
            figures[f"throughput_vs_bare_{size}"] = round(fps / base, 3)
        print("\n# 2. CPU per camera at 5 fps (paced 25 fps replay: every frame decoded, 5/s encoded + published)")
        for size, path in clips.items():
            for motion in (False, True):
                camera = camera_config(f"cpu-{size}", path, realtime=True, motion=motion)
                fps, cpu, published = pipeline(config, camera, args.seconds, True)
                print(f"{size:>9} motion={'on ' if motion else 'off'}: read {fps:5.1f} fps, "
                      f"published {published / args.seconds:4.1f}/s, CPU {cpu:5.1f}% of one core")  # fmt: skip
                figures[f"cpu_pct_5fps_{size}_motion_{'on' if motion else 'off'}"] = round(cpu, 1)
        print("\n# 3. motion gating (default settings, keep-alive 10 s) on the shared footage")
        for name, path in CLIPS.items():
            for fps in (5.0, None):
                sampled, skipped, keepalives = motion_share(path, fps)
                print(f"{name:>15} at {'every frame' if fps is None else f'{fps:.0f} fps':>11}: "
                      f"{skipped}/{sampled} sampled frames skipped ({100 * skipped / max(1, sampled):.0f}%), "
                      f"{keepalives} keep-alives")  # fmt: skip
        sampled, skipped = static_scene_share(CLIPS["TUD-Campus"])
        print(f"{'static scene':>15} at       5 fps: {skipped}/{sampled} sampled frames skipped "
              f"({100 * skipped / sampled:.0f}%) (TUD-Campus frame 0 held 60 s with sensor noise)")  # fmt: skip
        print("\n# 4. decoder threads: CPU per decoded frame, 1 thread vs FFmpeg's choice (one per core)")
        for size, path in clips.items():
            one, auto = decode_cpu_ms(path, 1), decode_cpu_ms(path, 0)
            print(f"{size:>9}: 1 thread {one:.2f} CPU ms/frame ({1000 / one:.0f} frames/s on one core) | "
                  f"FFmpeg's choice {auto:.2f} | ratio {auto / one:.2f}")  # fmt: skip
            figures[f"decode_cpu_ms_{size}"] = {"1": round(one, 3), "auto": round(auto, 3)}
    print("\n# 5. decoder threads: delay added on a live 640x480 stream at 25 fps (packet written -> frame read)")
    cap = cv2.VideoCapture(str(CLIPS["TUD-Stadtmitte"]), cv2.CAP_FFMPEG)
    frames: list[np.ndarray] = []
    while len(frames) < 120 and (read := cap.read())[0]:
        frames.append(read[1])
    cap.release()
    delays = {threads: live_delay_ms(frames, threads) for threads in (1, 2, 4)}
    for threads, delay in delays.items():
        print(f"  {threads} thread(s): {delay:5.0f} ms, {delay - delays[1]:+5.0f} ms vs 1 thread "
              f"({(delay - delays[1]) / 40:+.1f} frames at 25 fps)")  # fmt: skip
    figures["live_delay_ms"] = {str(t): round(d, 1) for t, d in delays.items()}
    figures["delay_per_extra_thread_ms"] = round((delays[4] - delays[1]) / 3, 1)
    print("\n# 6. detection-width frames (max_width=416): CPU ms per frame, resize + encode vs encoding the full frame")
    for size, source in (("640x480", frames[:60]), ("1920x1080", [cv2.resize(f, (1920, 1080)) for f in frames[:30]])):
        ms = detect_width_cpu_ms(source)
        print(f"{size:>9}: full encode {ms['full_encode']:.2f} | resize + encode {ms['resize_encode']:.2f} "
              f"(ratio {ms['resize_encode'] / ms['full_encode']:.2f}) | resize {ms['resize']:.2f} vs INTER_AREA "
              f"{ms['area_resize']:.2f} (ratio {ms['resize'] / ms['area_resize']:.2f})")  # fmt: skip
        figures[f"detect_width_cpu_ms_{size}"] = {name: round(value, 3) for name, value in ms.items()}
    print(f"\nload average after: {os.getloadavg()}")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
