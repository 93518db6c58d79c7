"""GPU benchmark (a script, not a test; `bench/gpu_check.sh` sets up its environment and runs it): frames/s of
the detection function's inference at batch 1-32 on the CUDA provider (and TensorRT with --tensorrt), fp32 and
fp16, with and without IOBinding, through vigil's own session code (`detect.runtime`), plus a CPU figure and
the fp16 boxes checked against fp32 on real frames. Needs no GPU to start: it says what is missing.

The shared YOLOX-Nano file has a fixed batch of 1; its three Reshapes carry that 1, so a batch-dynamic copy is
made by declaring the batch symbolic and letting those Reshapes copy it (shape 0), and checked against the
fixed graph frame by frame before any figure is taken.

Ends with one JSON line: {"bench": "gpu", "device", "fps": {"cuda fp32": {"1": ..}, ...}, ...}.

    python bench/bench_gpu.py [--model yolox_nano] [--batches 1,2,4,8,16,32] [--seconds 2] [--tensorrt]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from detect.decoders import make_decoder  # noqa: E402
from detect.detector import Detector, Thresholds  # noqa: E402
from detect.runtime import RuntimeOptions, create_session  # noqa: E402
from models import Registry  # noqa: E402
from vigil.imaging import encode_jpeg  # noqa: E402


def dynamic_batch(source: Path, target: Path) -> None:
    """A copy of `source` whose batch dimension is symbolic (Reshapes that hard-code batch 1 copy it)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    for value in [*model.graph.input, *model.graph.output]:
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    initializers = {i.name: i for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in initializers:
            shape = numpy_helper.to_array(initializers[node.input[1]]).copy()
            if shape.size and shape[0] == 1:
                shape[0] = 0  # Reshape's 0: keep the input's dimension, i.e. the batch
                initializers[node.input[1]].CopyFrom(numpy_helper.from_array(shape, node.input[1]))
    onnx.save(model, str(target))


def frames_per_second(run, tensor: np.ndarray, seconds: float) -> float:  # type: ignore[no-untyped-def]
    for _ in range(3):
        run(tensor)  # warm-up (cuDNN algorithm search, TensorRT engine build)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(tensor)
        count += 1
    return count * tensor.shape[0] / (time.perf_counter() - started)


def detector_for(manifest, path: Path, options: RuntimeOptions) -> Detector:  # type: ignore[no-untyped-def]
    session = create_session(path, options=options)
    probe = np.zeros((1, 3, *manifest.input_size), np.float32)
    shape = session.run(None, {session.get_inputs()[0].name: probe})[0].shape
    decoder = make_decoder(manifest.family, shape, len(manifest.class_names), manifest.input_size, manifest.strides)
    return Detector(manifest, session, decoder, Thresholds(0.25, 0.45), options=options)


def agreement(reference: Detector, other: Detector, tensor: np.ndarray, prepared) -> float:  # type: ignore[no-untyped-def]
    """Share of the reference's boxes (conf >= 0.5) that `other` finds at IoU >= 0.9."""
    from vigil.geometry import box_iou

    found = total = 0
    for a, b in zip(reference.postprocess(reference.infer(tensor), prepared),
                    other.postprocess(other.infer(tensor), prepared), strict=True):  # fmt: skip
        sure = a.xyxy[a.confidence >= 0.5]
        total += len(sure)
        if len(sure) and len(b):
            found += int((box_iou(sure, b.xyxy).max(axis=1) >= 0.9).sum())
    return found / max(total, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="yolox_nano")
    parser.add_argument("--batches", default="1,2,4,8,16,32")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per point")
    parser.add_argument("--tensorrt", action="store_true", help="also the TensorRT provider (builds engines: slow)")
    parser.add_argument("--dry-run-on-cpu", action="store_true", help="run every step on the CPU provider (fp32)")
    args = parser.parse_args()
    import onnxruntime as ort

    figures: dict[str, object] = {"bench": "gpu", "model": args.model, "onnxruntime": ort.__version__}
    available = ort.get_available_providers()
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False).stdout.strip()  # fmt: skip
    except FileNotFoundError:
        smi = ""
    figures["device"] = smi or "no nvidia-smi"
    print(f"onnxruntime {ort.__version__}, providers {available}; GPU: {figures['device']}")
    if "CUDAExecutionProvider" not in available and not args.dry_run_on_cpu:
        print("the CUDA provider is missing: install onnxruntime-gpu alone (bench/gpu_check.sh does)")
        figures["error"] = "no CUDAExecutionProvider"
        print(json.dumps(figures))
        return 1
    manifest = Registry().get(args.model)
    work = Path(tempfile.mkdtemp(prefix="vigil-gpu-"))
    path = work / "dynamic.onnx"
    dynamic_batch(manifest.onnx_path, path)
    import cv2

    capture = cv2.VideoCapture(str(REPO.parent / "shared/data/footage/TUD-Stadtmitte/TUD-Stadtmitte.mp4"))
    images = [capture.read()[1] for _ in range(32)]
    capture.release()
    cpu = detector_for(manifest, path, RuntimeOptions(("cpu",)))
    prepared = cpu.preprocess([cv2.imdecode(np.frombuffer(encode_jpeg(i), np.uint8), 1) for i in images])
    fixed = create_session(manifest.onnx_path, options=RuntimeOptions(("cpu",)))
    single = np.concatenate([fixed.run(None, {fixed.get_inputs()[0].name: t[None]})[0] for t in prepared.tensor[:4]])
    drift = float(np.abs(cpu.infer(prepared.tensor[:4]) - single).max())
    print(f"batch-dynamic copy vs the fixed graph on CPU, 4 real frames: max |difference| {drift:.2e}")
    figures["dynamic_vs_fixed_max_abs"] = drift
    batches = [int(b) for b in args.batches.split(",")]
    tensors = {b: np.ascontiguousarray(np.resize(prepared.tensor, (b, *prepared.tensor.shape[1:]))) for b in batches}
    fps: dict[str, dict[str, float]] = {"cpu fp32": {"1": round(frames_per_second(cpu.runner, tensors[1], 1.0), 1)}}
    providers = ["cuda"] + (["tensorrt"] if args.tensorrt and "TensorrtExecutionProvider" in available else [])
    if args.dry_run_on_cpu:
        providers = ["cpu"]
    fp32: Detector | None = None
    for provider in providers:
        for precision in ("fp32",) if provider == "cpu" else ("fp32", "fp16"):
            name = f"{provider} {precision}"
            detector = detector_for(manifest, path, RuntimeOptions((provider,), precision=precision))  # type: ignore[arg-type]
            fps[name] = {}
            for batch in batches:
                fps[name][str(batch)] = round(frames_per_second(detector.runner, tensors[batch], args.seconds), 1)
                print(f"{name:<16} batch {batch:>2}: {fps[name][str(batch)]:>8.1f} frames/s", flush=True)
            plain = detector_for(manifest, path, RuntimeOptions((provider,), precision=precision, io_binding="never"))  # type: ignore[arg-type]
            key = f"{name} no IOBinding"
            fps[key] = {"8": round(frames_per_second(plain.runner, tensors[8], args.seconds), 1)}
            print(f"{key:<16} batch  8: {fps[key]['8']:>8.1f} frames/s (IOBinding: {fps[name]['8']})")
            if precision == "fp32":
                fp32 = detector
                figures[f"{provider}_fp32_vs_cpu_boxes"] = round(agreement(cpu, detector, prepared.tensor, prepared), 3)
            elif fp32 is not None:
                figures[f"{provider}_fp16_vs_fp32_boxes"] = round(
                    agreement(fp32, detector, prepared.tensor, prepared), 3
                )
    figures["fps"] = fps
    best = max((v, k, b) for k, row in fps.items() for b, v in row.items())
    figures["best"] = {"fps": best[0], "variant": best[1], "batch": int(best[2])}
    print(f"best: {best[0]:.0f} frames/s ({best[1]}, batch {best[2]}) = {best[0] / 5:.0f} cameras at 5 fps by "
          "inference alone")  # fmt: skip
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
