"""False-positive controls benchmark: what object filters, object masks and the score history cost
the alert engine, and what motion masks cost motion gating, each against the same work without
them in the same process.

    .venv/bin/python bench/bench_filters.py [--frames 300]

1. Alert engine: 20 cameras x 10 drifting people at 5 fps (bench_alerts' records), records/s of
   `AlertEngine.process` with every control on (a per-class filter of each kind, a default entry,
   a threshold with a 5-score window, two object masks) against the engine without any.
2. Motion gating: `MotionDetector.detect` on TUD-Campus' 640x480 frames (../shared/data), ms per
   frame with two motion masks against none (the mask is rasterised once per frame size).

Ends with one JSON line of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_alerts import config_dict, make_records

from alerts.engine import AlertEngine
from ingest.motion import MotionDetector
from ingest.sources import ReplaySource
from vigil.config import MotionMaskConfig, VigilConfig
from vigil.contracts import DetectionsRecord

REPO = Path(__file__).resolve().parents[1]
CAMPUS = REPO.parent / "shared" / "data" / "footage" / "TUD-Campus" / "TUD-Campus.mp4"
MASKS = [
    {"name": "statue", "units": "fraction", "polygon": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.6]], "classes": ["person"]},
    {"name": "poster", "polygon": [[400, 50], [600, 50], [600, 200], [400, 200]]},
]
FILTERS = {
    "default": {"min_score": 0.3},
    "person": {"min_area": 0.002, "max_area": 0.6, "min_ratio": 0.2, "max_ratio": 1.5, "min_score": 0.35,
               "threshold": 0.5},
}  # fmt: skip


def engine_rate(records: list[DetectionsRecord], controls: bool) -> tuple[float, int]:
    raw = config_dict(None, "bench")
    if controls:
        raw["objects"] = {"filters": FILTERS, "score_window": 5}
        for camera in raw["cameras"]:  # type: ignore[attr-defined]
            camera["objects"] = {"masks": MASKS}
    engine = AlertEngine.from_config(VigilConfig.model_validate(raw))
    alerts = 0
    start = time.perf_counter()
    for record in records:
        alerts += len(engine.process(record, 0))
    return len(records) / (time.perf_counter() - start), alerts


def motion_ms(frames: list[object], masks: list[MotionMaskConfig], rounds: int) -> float:
    detector = MotionDetector(masks=masks)
    start = time.perf_counter()
    for _ in range(rounds):
        detector.reset()
        for frame in frames:
            detector.detect(frame)  # type: ignore[arg-type]
    return 1000 * (time.perf_counter() - start) / (rounds * len(frames))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=300, help="frames per camera (x20 cameras)")
    parser.add_argument("--rounds", type=int, default=5, help="passes over the clip for motion gating")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"load: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min), cpus {os.cpu_count()}")
    records = [DetectionsRecord.from_bytes(v) for v in make_records(args.frames)]
    engine_rate(records[:200], True)  # warm-up: imports, first allocations
    bare, bare_alerts = engine_rate(records, False)
    controlled, controlled_alerts = engine_rate(records, True)
    print(
        f"engine with controls: {controlled:8.0f} rec/s  vs without {bare:8.0f} rec/s  ratio {controlled / bare:.3f}"
        f"  ({controlled_alerts} vs {bare_alerts} alert events)"
    )
    source = ReplaySource(str(CAMPUS), realtime=False)
    source.open()
    frames = []
    while (frame := source.read()) is not None:
        frames.append(frame.image)
    source.close()
    masks = [MotionMaskConfig.model_validate({k: v for k, v in m.items() if k != "classes"}) for m in MASKS]
    plain = motion_ms(frames, [], args.rounds)
    masked = motion_ms(frames, masks, args.rounds)
    print(f"motion with masks:    {masked:8.3f} ms/frame vs without {plain:8.3f} ms/frame  ratio {masked / plain:.3f}")
    figures = {
        "engine_rec_per_s": round(controlled, 1),
        "engine_baseline_rec_per_s": round(bare, 1),
        "engine_ratio": round(controlled / bare, 3),
        "motion_ms_per_frame": round(masked, 3),
        "motion_baseline_ms_per_frame": round(plain, 3),
        "motion_ratio": round(masked / plain, 3),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
