"""Benchmark of the detection path (a script, not a test). Prints figures and ratios, all measured in this
process on the same ONNX file and the same frames:

* bare   — `session.run` at batch 1 on pre-made tensors (no decode, no pre/post-processing): the ceiling, once
           with ONNX Runtime's default session options (spinning threads) and once with vigil's; the better
           of the two is the baseline;
* ultra  — ultralytics' `YOLO(onnx).predict` per frame (JPEG decode included, as for vigil);
* vigil  — `Detector.stream` (JPEG decode + letterbox of the next batch overlapped with inference, decode, NMS)
           at batch 1, 4 and 8 with the config's defaults, and at batch 4 with each other `detect.spin_wait`;
* vigil at batch 4 with the model's square input instead of rectangular canvases (`detect.rect_input`, for
  models whose manifest allows it: YOLOX-Nano runs the 640x480 footage at 416x320), and the accuracy of both
  on every frame of the two labelled clips (AP50, recall, precision of persons; `--skip-accuracy` to skip);
* with `--size WxH` (frames upscaled from the footage, e.g. a 1920x1080 camera): vigil at batch 4 with
  `detect.reduced_decode` off, against on (the default);
* the peak RSS of a child process running only the vigil path (what a worker needs), and GFLOP/s achieved
  against the FLOPs counted from the ONNX graph (Conv/ConvInteger/MatMul/MatMulInteger/Gemm).

Ends with one JSON line: {"bench": "detect", "model", "vigil_vs_bare", "vigil_vs_ultralytics", ...}.

    .venv/bin/python bench/bench_detect.py [--model yolov8n_int8] [--frames 48] [--threads 2] [--size 1920x1080]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detect.detector import Detector, Thresholds  # noqa: E402
from detect.runtime import RuntimeOptions  # noqa: E402
from models import ModelManifest, Registry  # noqa: E402
from vigil.config import DetectConfig  # noqa: E402

FOOTAGE = REPO.parent / "shared" / "data" / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"


def jpeg_frames(count: int, size: tuple[int, int] | None = None) -> list[bytes]:
    """The footage's first `count` frames as JPEG (quality 85, as ingest publishes), resized to `size`."""
    capture = cv2.VideoCapture(str(FOOTAGE))
    frames: list[bytes] = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        if size is not None:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
        frames.append(cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])[1].tobytes())
    capture.release()
    return frames


def graph_flops(manifest: ModelManifest) -> float:
    """FLOPs of one batch-1 inference: 2 x multiply-accumulates of Conv/MatMul/Gemm (and integer variants)."""
    import onnx
    from onnx import numpy_helper, shape_inference

    model = shape_inference.infer_shapes(onnx.load(str(manifest.onnx_path)))
    graph = model.graph
    shapes: dict[str, list[int]] = {}
    for value in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    total = 0.0
    for node in graph.node:
        if node.op_type in ("Conv", "ConvInteger"):
            w, out = shapes.get(node.input[1]), shapes.get(node.output[0])
            if w and out and all(out):
                total += 2.0 * float(np.prod(out)) * float(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "MatMulInteger", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if a and out and all(out) and a[-1]:
                total += 2.0 * float(np.prod(out)) * a[-1]
    return total


def time_it(run, frames: int) -> float:  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    run()
    return frames / (time.perf_counter() - started)


def vigil_fps(detector: Detector, jpegs: list[bytes], batch: int) -> float:
    batches = [jpegs[i : i + batch] for i in range(0, len(jpegs), batch)]

    def run() -> None:
        for _ in detector.stream(batches):
            pass

    return time_it(run, len(jpegs))


def rss_child(model: str, threads: int, frames: int) -> None:
    detector = Detector.load(Registry().get(model), options=RuntimeOptions(intra_op_threads=threads))
    jpegs = jpeg_frames(frames)
    vigil_fps(detector, jpegs, 8)
    # VmHWM, not ru_maxrss: on Linux ru_maxrss survives fork+exec, so a child would report its parent's peak.
    hwm_kb = next(int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines()
                  if line.startswith("VmHWM:"))  # fmt: skip
    print(json.dumps({"max_rss_mb": hwm_kb / 1024,
                      "torch_loaded": "torch" in sys.modules}))  # fmt: skip


def rect_accuracy(manifest: ModelManifest, threads: int) -> dict[str, dict[str, float]]:
    """Persons on every frame of both labelled clips, square vs rectangular input: AP50, recall and precision at
    conf 0.25 (`vigil.eval.scoring`, pycocotools from the `eval` extra). Rectangular input must lose nothing."""
    from vigil.eval.groundtruth import load_mot
    from vigil.eval.run import read_frames, to_gt_pixels
    from vigil.eval.scoring import score_detections

    scores: dict[str, dict[str, float]] = {}
    for rect in (False, True):
        detector = Detector.load(manifest, intra_op_threads=threads, thresholds=Thresholds(0.01, 0.45), rect_input=rect)
        for clip in ("TUD-Stadtmitte", "TUD-Campus"):
            folder = FOOTAGE.parents[1] / clip
            gt = load_mot(folder / "gt.txt")
            frames = list(read_frames(folder / f"{clip}.mp4"))
            predictions = {}
            for start in range(0, len(frames), 4):
                chunk = frames[start : start + 4]
                for (index, image), dets in zip(chunk, detector([im for _, im in chunk]), strict=True):
                    predictions[index + 1] = to_gt_pixels(dets, image.shape[1], image.shape[0], gt)
            person = score_detections(gt, predictions, detector.class_names, 0.25).per_class["person"]
            scores[f"{clip} {'rect' if rect else 'square'}"] = {
                "ap50": person.ap50, "recall": person.recall, "precision": person.precision,
            }  # fmt: skip
    print(f"{'accuracy (persons, conf 0.25)':<34}{'AP50':>8}{'recall':>9}{'precision':>11}")
    for name, row in scores.items():
        print(f"{name:<34}{row['ap50']:>8.4f}{row['recall']:>9.4f}{row['precision']:>11.4f}")
    return scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolov8n_int8")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    parser.add_argument("--size", help="resize the footage's frames to WxH first (e.g. 1920x1080)")
    parser.add_argument("--skip-accuracy", action="store_true", help="skip square vs rectangular input accuracy")
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.model, args.threads, args.frames)
        return 0
    print(f"load: {os.getloadavg()} on {os.cpu_count()} cores (other processes share them)")
    manifest = Registry().get(args.model)
    defaults = DetectConfig()
    size = tuple(int(v) for v in args.size.split("x")) if args.size else None

    def load(spin_wait: str) -> Detector:
        options = RuntimeOptions(("cpu",), args.threads, spin_wait)  # type: ignore[arg-type]
        return Detector.load(manifest, thresholds=Thresholds(0.25, 0.7, 300), options=options)

    detector = load(defaults.spin_wait)
    others = {mode: load(mode) for mode in ("never", "during_run", "always") if mode != defaults.spin_wait}
    import onnxruntime as ort

    plain = ort.SessionOptions()
    plain.intra_op_num_threads = args.threads
    ort_default = ort.InferenceSession(str(manifest.onnx_path), plain, providers=["CPUExecutionProvider"])
    jpegs = jpeg_frames(args.frames, size)  # type: ignore[arg-type]
    images = [cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR) for j in jpegs]
    # Bare runs take the model's own square input (rectangular canvases are vigil's, measured as a variant).
    tensors = [detector.preprocessor.square()([image]).tensor for image in images]
    width, height = images[0].shape[1], images[0].shape[0]
    print(f"model {manifest.name} ({manifest.family}, input {manifest.input_size}, fixed batch "
          f"{detector.fixed_batch}), {len(jpegs)} frames of {FOOTAGE.name} at {width}x{height}, {args.threads} "
          f"threads, spin_wait {defaults.spin_wait} (default)")  # fmt: skip
    for _ in range(3):
        detector.infer(tensors[0])  # warm-up
        ort_default.run(None, {detector.input_name: tensors[0]})

    def bare(session: ort.InferenceSession) -> Callable[[], float]:
        def run() -> None:
            for tensor in tensors:
                session.run(None, {detector.input_name: tensor})

        return lambda: time_it(run, len(tensors))

    variants: list[tuple[str, Callable[[], float]]] = [
        ("bare, ORT defaults", bare(ort_default)),
        ("bare, vigil options", bare(detector.session)),
    ]
    # ultralytics' predict decodes only its own output format: it is the baseline for its own models.
    if manifest.family == "ultralytics":
        os.environ["YOLO_OFFLINE"] = "1"
        os.environ["YOLO_AUTOINSTALL"] = "false"
        from ultralytics import YOLO

        ultra_model = YOLO(str(manifest.onnx_path), task="detect")
        ultra_model.predict(images[0], verbose=False)  # warm-up (builds its predictor)

        def ultra() -> None:
            for j in jpegs:
                ultra_model.predict(cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR), verbose=False)

        variants.append(("ultralytics predict", lambda: time_it(ultra, len(jpegs))))
    variants += [(f"vigil b{b}", lambda b=b: vigil_fps(detector, jpegs, b)) for b in (1, 4, 8)]  # type: ignore[misc]
    variants += [(f"vigil b4 spin {m}", lambda d=d: vigil_fps(d, jpegs, 4)) for m, d in others.items()]  # type: ignore[misc]
    if detector.rect:
        rect_preprocessor = detector.preprocessor

        def square_input() -> float:
            detector.preprocessor = rect_preprocessor.square()
            try:
                return vigil_fps(detector, jpegs, 4)
            finally:
                detector.preprocessor = rect_preprocessor

        variants.append(("vigil b4 square input", square_input))
    reducible = detector.reduction(width, height) > 1
    if reducible:

        def full_decode() -> float:
            detector.reduced_decode = False
            try:
                return vigil_fps(detector, jpegs, 4)
            finally:
                detector.reduced_decode = True

        variants.append(("vigil b4 full decode", full_decode))

    results: dict[str, float] = {}
    # Interleave rounds so a burst of load from other processes hits every variant alike; keep the best.
    for round_ in range(args.rounds):
        for name, fn in variants:
            results[name] = max(results.get(name, 0.0), fn())
        print(f"  round {round_ + 1}/{args.rounds} done (load {os.getloadavg()[0]:.1f})", flush=True)
    base = max(results["bare, ORT defaults"], results["bare, vigil options"])
    ultra_fps = results.get("ultralytics predict")
    print(f"{'path':<24}{'frames/s':>10}{'x bare':>9}{'x ultralytics':>15}")
    for name, fps in results.items():
        versus = f"{fps / ultra_fps:>15.3f}" if ultra_fps else f"{'n/a':>15}"
        print(f"{name:<24}{fps:>10.2f}{fps / base:>9.3f}{versus}")
    best_vigil = max(results[f"vigil b{b}"] for b in (1, 4, 8))
    flops = graph_flops(manifest)
    print(f"graph FLOPs per frame: {flops / 1e9:.2f} GFLOP (Conv/MatMul/Gemm incl. integer ops)")
    # vigil's frames run at their rectangular canvas: fewer FLOPs per frame than the square graph's.
    box = detector.preprocessor.fit(width, height)
    share = box.canvas_w * box.canvas_h / (manifest.input_size[0] * manifest.input_size[1])
    for name, per_frame in (("bare, ORT defaults", flops), ("vigil b8", flops * share)):
        achieved = per_frame * results[name] / 1e9
        print(f"achieved {name}: {achieved:.1f} GFLOP/s = {achieved / 190:.1%} of ~190 GFLOP/s fp32 peak (2 cores)")
    child = subprocess.run(
        [sys.executable, __file__, "--rss-child", "--model", args.model, "--threads", str(args.threads),
         "--frames", str(min(args.frames, 24))],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    info = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"peak RSS of a vigil-only process (batch 8): {info['max_rss_mb']:.0f} MB "
          f"(target < 600 MB; torch loaded: {info['torch_loaded']})")  # fmt: skip
    accuracy = rect_accuracy(manifest, args.threads) if detector.rect and not args.skip_accuracy else {}
    print(f"load after: {os.getloadavg()}")
    figures: dict[str, object] = {
        "bench": "detect",
        "model": manifest.name,
        "frame_size": f"{width}x{height}",
        "bare_fps": round(base, 2),
        "vigil_fps": round(best_vigil, 2),
        "vigil_vs_bare": round(best_vigil / base, 3),
        "vigil_vs_ultralytics": round(best_vigil / ultra_fps, 3) if ultra_fps else None,
        "spin_wait_default": defaults.spin_wait,
        **{f"b4_spin_{m}_vs_default": round(results[f"vigil b4 spin {m}"] / results["vigil b4"], 3) for m in others},
        "rect_input_vs_square": round(results["vigil b4"] / results["vigil b4 square input"], 3)
        if detector.rect
        else None,
        **{
            f"rect_{key}_delta_{clip.split('-')[1].lower()}": round(
                accuracy[f"{clip} rect"][key] - accuracy[f"{clip} square"][key], 4
            )
            for clip in ("TUD-Stadtmitte", "TUD-Campus")
            for key in ("ap50", "recall")
            if accuracy
        },
        "reduced_decode_vs_full": round(results["vigil b4"] / results["vigil b4 full decode"], 3)
        if reducible
        else None,
        "load_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
