"""What bench_pipeline reads off a stack that ran: CPU per process from /proc, frames/s in the window where
ingest published, the model's busy share, the bare model and the detection function alone on the same
bytes, and each hop of a started alert's latency from the timestamps its records carry."""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detect.detector import Detector
from vigil.config import VigilConfig
from vigil.config.loader import parse_config
from vigil.contracts import AlertRecord, DetectionsRecord
from vigil.kafka import make_consumer

HOPS = ("ingest publish", "frames lag", "batch wait", "inference", "detections publish", "aggregator", "webhook")
# What the inference hop is made of, printed under it.
INFERENCE_PARTS = ("decode", "model busy", "session.run", "post-process")


def tree_cpu_s(root: int) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) of process `root` and each descendant alive now, from /proc, with its role:
    the vigil subcommand it runs (`ingest`, `detect`, `alerts`, `up`), else its program's name."""
    if root <= 0:
        return {}
    stats: dict[int, tuple[int, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        stats[int(entry)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    result: dict[int, tuple[str, float]] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        if pid not in stats:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        role = next((w for w in words if w in ("ingest", "detect", "alerts", "web", "up")), Path(words[0]).name)
        result[pid] = (role, stats[pid][1])
        frontier += [child for child, (parent, _) in stats.items() if parent == pid]
    return result


def cpu_ms_per_frame(
    samples: list[tuple[int, dict[str, float]]], window: tuple[int, int], frames: int
) -> dict[str, float]:
    """CPU ms per frame over `window` (wall ns) in which `frames` frames were detected, by role and in `total`."""
    times = np.array([t for t, _ in samples], np.float64)
    roles = sorted({role for _, cpu in samples for role in cpu})
    result = {}
    for role in roles:
        cpu = np.array([c.get(role, 0.0) for _, c in samples])
        used = np.interp(window[1], times, cpu) - np.interp(window[0], times, cpu)
        result[role] = float(used * 1000 / max(1, frames))
    result["total"] = sum(result.values())
    return result


def topic_records(config: VigilConfig, topic: str) -> list[Any]:
    consumer = make_consumer(config.kafka, "bench", None, [topic], consumer_timeout_ms=3000)
    try:
        return list(consumer)
    finally:
        consumer.close()


def load(path: Path) -> VigilConfig:
    return parse_config(path.read_text(), str(path), {})


def model_busy(records: list[DetectionsRecord]) -> float:
    """Share of the window the model ran: each batch's session.run time once (the records of one batch
    share their publish time and worker), summed, over first-to-last wall time (workers add up)."""
    batches = {(r.produced_ns, r.timings.infer_ms) for r in records if r.reused_from is None}
    produced = [r.produced_ns for r in records]
    span_ms = (max(produced) - min(produced)) / 1e6
    return sum(ms for _, ms in batches) / max(span_ms, 1.0)


@dataclass(frozen=True)
class Throughput:
    fps: float
    records: list[DetectionsRecord]  # the unique frames detected in the window
    window: tuple[int, int]  # wall ns
    ahead: float  # share of the frames published before the first detections record
    offered_fps: float  # frames/s ingest published while the window lasted

    def cpu(self, samples: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
        """CPU ms per frame by role: ingest's per frame it published (a pace above capacity makes it publish
        more than the stack detects), every other role's per frame detected, all within the window."""
        detected = cpu_ms_per_frame(samples, self.window, len(self.records) - 1)
        seconds = (self.window[1] - self.window[0]) / 1e9
        published = cpu_ms_per_frame(samples, self.window, max(1, round(self.offered_fps * seconds) - 1))
        if "ingest" in detected:
            detected["ingest"] = published["ingest"]
        detected["total"] = sum(ms for role, ms in detected.items() if role != "total")
        return detected


def throughput(config: VigilConfig, while_publishing: bool = True) -> Throughput:
    """Steady frames/s from the first detections record to the last one produced while ingest was still
    publishing (`while_publishing=False`: to the last one). A frame published before the window (while the
    workers load the model and join the group) cost ingest its CPU outside it, and after ingest's last frame
    the stack drains a backlog with ingest idle: either way the window would not hold the stack's whole cost."""
    records = [DetectionsRecord.from_bytes(m.value) for m in topic_records(config, config.topics.detections.name)]
    unique = sorted({r.frame_key: r for r in records}.values(), key=lambda r: r.produced_ns)
    published = sorted(m.timestamp * 1_000_000 for m in topic_records(config, config.topics.frames.name))
    start = unique[0].produced_ns
    end = min(unique[-1].produced_ns, published[-1]) if while_publishing else unique[-1].produced_ns
    inside = [r for r in unique if r.produced_ns <= end]
    if end <= start or len(inside) < 20:
        raise SystemExit(
            f"ingest published its last frame {(start - published[-1]) / 1e9:.1f} s before the first detections "
            "record: the recording is too short for its pace (raise --repeat or lower --pace)"
        )
    offered = sum(start <= t <= end for t in published)
    return Throughput(
        fps=(len(inside) - 1) / ((end - start) / 1e9),
        records=inside,
        window=(start, end),
        ahead=sum(t < start for t in published) / len(published),
        offered_fps=offered / ((end - start) / 1e9),
    )


def bare_fps(detector: Detector, frames: list[bytes], count: int = 48) -> tuple[float, float]:
    """`session.run` at batch 1 on pre-made tensors: (frames/s, frames per CPU second), the better of ONNX
    Runtime's default session options (threads spin) and vigil's (they do not)."""
    import onnxruntime as ort

    from vigil.imaging import decode_image

    # The model's own (square) input: the rule of thumb is for the model as exported, not vigil's rectangular
    # canvases (`detect.rect_input`), which the pipeline and alone figures use.
    square = detector.preprocessor.square()
    tensors = [square([decode_image(f)]).tensor for f in frames[:count]]
    best_wall = best_cpu = 0.0
    for session in (ort.InferenceSession(str(detector.manifest.onnx_path), providers=["CPUExecutionProvider"]),
                    detector.session):  # fmt: skip
        name = session.get_inputs()[0].name
        for tensor in tensors[:3]:
            session.run(None, {name: tensor})
        started, cpu = time.perf_counter(), time.process_time()
        for tensor in tensors:
            session.run(None, {name: tensor})
        best_wall = max(best_wall, len(tensors) / (time.perf_counter() - started))
        best_cpu = max(best_cpu, len(tensors) / (time.process_time() - cpu))
    return best_wall, best_cpu


def alone_fps(detector: Detector, frames: list[bytes], batch: int) -> float:
    batches = [frames[i : i + batch] for i in range(0, len(frames), batch)]
    for _ in detector.stream(batches[:2]):
        pass  # warm-up
    started = time.perf_counter()
    for _ in detector.stream(batches):
        pass
    return len(frames) / (time.perf_counter() - started)


def hop_breakdown(config: VigilConfig, started: list[tuple[dict[str, Any], int]]) -> dict[str, list[float]]:
    """Per started alert delivered: milliseconds of each hop, from the records' own timestamps."""
    frames = {
        f"{m.topic}/{m.partition}/{m.offset}": m.timestamp for m in topic_records(config, config.topics.frames.name)
    }
    detections: dict[str, DetectionsRecord] = {}
    for m in topic_records(config, config.topics.detections.name):
        record = DetectionsRecord.from_bytes(m.value)
        detections.setdefault(record.frame_key, record)
    alert_ts: dict[str, int] = {}
    for m in topic_records(config, config.topics.alerts.name):
        alert = AlertRecord.from_bytes(m.value)
        if alert.event == "started":
            alert_ts.setdefault(alert.alert_id, m.timestamp)
    hops: dict[str, list[float]] = {name: [] for name in (*HOPS, *INFERENCE_PARTS, "total")}
    for body, received_ns in started:
        alert = AlertRecord.from_bytes(json.dumps(body).encode())
        key = f"{alert.frame.topic}/{alert.frame.partition}/{alert.frame.offset}"
        found = detections.get(key)
        if found is None or key not in frames or alert.alert_id not in alert_ts:
            continue
        record = found
        t = record.timings
        capture = record.capture_ns
        created_ns = capture + alert.latency_ms * 1e6
        values = {
            "ingest publish": frames[key] - capture / 1e6,
            "frames lag": t.queue_wait_ms - t.batch_wait_ms,
            "batch wait": t.batch_wait_ms,
            "inference": t.decode_ms + t.infer_wait_ms + t.infer_ms + t.post_ms,
            "decode": t.decode_ms,
            "model busy": t.infer_wait_ms,  # the prepared batch waited for the batch before it
            "session.run": t.infer_ms,
            "post-process": t.post_ms,
            "detections publish": (created_ns - record.produced_ns) / 1e6,
            "aggregator": alert_ts[alert.alert_id] - created_ns / 1e6,
            "webhook": received_ns / 1e6 - alert_ts[alert.alert_id],
            "total": (received_ns - capture) / 1e6,
        }
        for name, value in values.items():
            hops[name].append(value)
    return hops


class StallProbe(threading.Thread):
    """While the stack runs: how late an idle thread of this (quiet) process wakes from 2 ms sleeps, and the
    hypervisor's steal time. A tail that every hop shares at once is the machine's, not the stack's."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.late_ms: list[float] = []
        self.done = threading.Event()
        self.steal = self.total = 0

    @staticmethod
    def _cpu_jiffies() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return fields[7] if len(fields) > 7 else 0, sum(fields[:8])

    def run(self) -> None:
        steal, total = self._cpu_jiffies()
        before = time.perf_counter()
        while not self.done.is_set():
            time.sleep(0.002)
            now = time.perf_counter()
            self.late_ms.append((now - before - 0.002) * 1000)
            before = now
        after = self._cpu_jiffies()
        self.steal, self.total = after[0] - steal, after[1] - total

    def summary(self) -> dict[str, float]:
        late = np.asarray(self.late_ms or [0.0])
        return {"steal_pct": round(100 * self.steal / max(self.total, 1), 2),
                "wake_late_p999_ms": round(float(np.percentile(late, 99.9)), 1),
                "wake_late_max_ms": round(float(late.max()), 1)}  # fmt: skip
