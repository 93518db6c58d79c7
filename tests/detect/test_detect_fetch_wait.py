"""`detect.fetch_wait_ms` on the real broker: a worker's fetches of frames gather that window's frames into one
answer instead of one each (each fetch costs kafka-python and the broker about the same CPU however few
records it carries), and no frame waits much longer than the window."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from detect.cli import frames_consumer
from vigil.config import VigilConfig
from vigil.kafka import ensure_topics, make_producer, subscribe

RATE_HZ = 50  # ten cameras at 5 fps
SECONDS = 3.0
FRAME_BYTES = 45_000  # a 640x480 JPEG at the default quality


def with_fetch_wait(base: VigilConfig, name: str, wait_ms: int) -> VigilConfig:
    frames = base.topics.frames.model_copy(update={"name": f"{base.topics.frames.name}-{name}"})
    detect = base.detect.model_copy(update={"group_id": f"{base.detect.group_id}-{name}", "fetch_wait_ms": wait_ms})
    return base.model_copy(update={"topics": base.topics.model_copy(update={"frames": frames}), "detect": detect})


def run_paced(config: VigilConfig) -> tuple[list[int], list[float]]:
    """Frames at RATE_HZ for SECONDS on three cameras, polled as a worker polls while a batch infers (a few
    ms at a time): the sizes of the polls that returned records, and each frame's send -> poll wait, s."""
    ensure_topics(config.kafka, [config.topics.frames], config.topics)
    consumer = frames_consumer(config)
    subscribe(consumer, [config.topics.frames.name])
    producer = make_producer(config.kafka, "test")
    payload = np.random.default_rng(0).integers(0, 256, FRAME_BYTES, dtype=np.uint8).tobytes()
    sizes: list[int] = []
    waits: dict[int, float] = {}
    sent_at: dict[int, float] = {}
    stop = threading.Event()

    def consume() -> None:
        while not stop.is_set():
            polled = consumer.poll(timeout_ms=5)
            now = time.monotonic()
            size = 0
            for records in polled.values():
                for record in records:
                    seq = int.from_bytes(record.value[:4], "big")
                    waits[seq] = now - sent_at[seq]
                    size += 1
            if size:
                sizes.append(size)

    # A future, so that an error in the poll loop fails the test with its own message.
    pool = ThreadPoolExecutor(max_workers=1)
    polling = pool.submit(consume)
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the consumer was never assigned the frames partitions"
            time.sleep(0.05)
        time.sleep(1.0)  # the first fetches, which start from the log's end, have gone out
        frames = int(RATE_HZ * SECONDS)
        start = time.monotonic()
        for seq in range(frames):
            time.sleep(max(0.0, start + seq / RATE_HZ - time.monotonic()))
            sent_at[seq] = time.monotonic()
            producer.send(
                config.topics.frames.name, key=f"cam{seq % 3}".encode(), value=seq.to_bytes(4, "big") + payload
            )
        producer.flush()
        deadline = time.monotonic() + 20
        while len(waits) < frames:
            if polling.done():
                polling.result()  # raises what stopped the poll loop
            assert time.monotonic() < deadline, f"polled {len(waits)} of {frames} frames"
            time.sleep(0.05)
    finally:
        stop.set()
        pool.shutdown(wait=True)
        consumer.close(autocommit=False)
        producer.close()
    return sizes, list(waits.values())


@pytest.mark.broker
@pytest.mark.timeout(150)
def test_fetch_wait_gathers_frames_per_fetch_within_its_window(vigil_config: VigilConfig) -> None:
    sizes_0, waits_0 = run_paced(with_fetch_wait(vigil_config, "at-once", 0))
    sizes_100, waits_100 = run_paced(with_fetch_wait(vigil_config, "gathered", 100))

    mean_0, mean_100 = float(np.mean(sizes_0)), float(np.mean(sizes_100))
    # 100 ms of 50 frames/s is 5 frames: a fetch carries several; answered at the first frame it carries about one.
    assert mean_100 >= 3, f"fetch_wait_ms=100 polls carried {mean_100:.1f} frames on average ({len(sizes_100)} polls)"
    assert mean_100 >= 2 * mean_0, f"polls carried {mean_0:.1f} frames at 0 ms and {mean_100:.1f} at 100 ms"
    # A frame waits at most the window plus a fetch (generous for a loaded CI box); the 95th percentile, so one
    # scheduler stall does not fail the run while a window held longer than asked would hold most frames.
    p95_100 = float(np.percentile(waits_100, 95))
    assert p95_100 < 0.1 + 0.4, f"95 % of frames waited up to {p95_100 * 1000:.0f} ms"
    assert np.median(waits_0) < np.median(waits_100)
