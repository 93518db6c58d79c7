"""ONNX Runtime sessions: provider choice, threads and spinning, precision, IOBinding, and loading errors that
say how to fix them.

Thread spinning: an intra-op thread that finishes its share of a parallel section spins (busy-waits) for the
next one, and after a run for a while longer. Alone on a machine that saves wake-up latency; next to the
broker, ingest's decoders and this worker's own JPEG decode threads it burns the cores they need (bench:
bench/bench_detect.py and bench_pipeline.py, docs/operations.md "Capacity"); `detect.spin_wait` picks.
(The words avoid YAML 1.1's booleans: an unquoted `off` or `on` in a config file would read as false / true.)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from models.onnx_errors import ORT_ERRORS
from models.onnx_shapes import free_spatial_dims
from vigil.errors import ModelError

log = logging.getLogger(__name__)

SpinWait = Literal["never", "during_run", "always"]
Precision = Literal["fp32", "fp16"]
IoBindingMode = Literal["auto", "always", "never"]

PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# `auto` tries these, best first.
AUTO_ORDER = ("tensorrt", "cuda", "cpu")
GPU_PROVIDERS = frozenset({PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cuda"]})
# Session config entries per `detect.spin_wait` (ONNX Runtime's onnxruntime_session_options_config_keys.h).
SPIN_ENTRIES: dict[SpinWait, dict[str, str]] = {
    "never": {"session.intra_op.allow_spinning": "0"},
    "during_run": {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    "always": {"session.intra_op.allow_spinning": "1"},
}


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model's session is built; `DetectConfig` carries the same fields (`RuntimeOptions.of(config)`)."""

    providers: tuple[str, ...] = ("auto",)
    intra_op_threads: int = 0
    spin_wait: SpinWait = "never"
    precision: Precision = "fp32"
    io_binding: IoBindingMode = "auto"
    device_id: int = 0
    lanes: int = 0


def host_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow), else the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def resolve_layout(options: RuntimeOptions, provider: str, cores: int | None = None) -> RuntimeOptions:
    """Concrete lanes and threads for `provider`. On the CPU one single-threaded run per core: a small model's
    parallel sections are short, and intra-op threads that sleep between them (`spin_wait: never`) wake too
    late, while spinning ones take the cores from everything else; runs side by side share nothing
    (YOLOX-Nano here: 2 lanes x 1 thread 74-83 frames/s against 1 lane x 2 threads 39-50 and ORT's spinning
    default 45-58, `bench/bench_detect.py`). A GPU provider runs one batch at a time (1 lane)."""
    cores = cores or host_cores()
    if provider in GPU_PROVIDERS:
        return replace(options, lanes=options.lanes or 1)
    lanes = options.lanes or cores
    return replace(options, lanes=lanes, intra_op_threads=options.intra_op_threads or max(1, cores // lanes))


def choose_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """ONNX Runtime provider names to use, best first.

    `auto` takes every available provider in `AUTO_ORDER`. An explicit list keeps the available ones in the
    given order and logs a warning for each missing one (so `[cuda, cpu]` degrades to CPU with a warning);
    if none of them is available that is an error, because silently running a GPU config on CPU would
    miss its throughput by an order of magnitude.
    """
    wanted = list(AUTO_ORDER) if list(requested) == ["auto"] else list(requested)
    unknown = [name for name in wanted if name not in PROVIDER_NAMES]
    if unknown:
        raise ModelError(f"unknown execution provider(s) {unknown}; use auto, tensorrt, cuda or cpu")
    chosen = [PROVIDER_NAMES[name] for name in wanted if PROVIDER_NAMES[name] in available]
    missing = [name for name in wanted if PROVIDER_NAMES[name] not in available]
    if list(requested) != ["auto"]:
        for name in missing:
            log.warning(
                "execution provider %s is not available in this onnxruntime build (available: %s)",
                name, ", ".join(available),
            )  # fmt: skip
    if not chosen:
        raise ModelError(
            f"none of the execution providers {list(requested)} is available (this onnxruntime offers "
            f"{', '.join(available)}); install onnxruntime-gpu (`pip install 'vigil[gpu-cu12]'` on CUDA 12 "
            "hosts, 'vigil[gpu-cu13]' on CUDA 13) for cuda/tensorrt, or set detect.providers: [auto] or [cpu]"
        )
    return chosen


def session_options(options: RuntimeOptions) -> ort.SessionOptions:
    """Threads, spinning and graph optimisation of one worker's session."""
    session = ort.SessionOptions()
    session.intra_op_num_threads = options.intra_op_threads
    # One graph runs at a time per worker; parallelism comes from intra-op threads and the decode pool.
    session.inter_op_num_threads = 1
    session.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session.log_severity_level = 3
    for key, value in SPIN_ENTRIES[options.spin_wait].items():
        session.add_session_config_entry(key, value)
    return session


def provider_options(chosen: Sequence[str], options: RuntimeOptions) -> list[dict[str, str]]:
    """Per-provider options: the GPU's device id, TensorRT's own fp16 switch (CUDA runs an fp16 graph instead)."""
    result: list[dict[str, str]] = []
    for name in chosen:
        if name == PROVIDER_NAMES["tensorrt"]:
            result.append({"device_id": str(options.device_id), "trt_fp16_enable": str(options.precision == "fp16")})
        elif name == PROVIDER_NAMES["cuda"]:
            result.append({"device_id": str(options.device_id)})
        else:
            result.append({})
    return result


def wants_fp16_graph(chosen: Sequence[str], options: RuntimeOptions) -> bool:
    """Whether the graph itself is converted to fp16: on the CUDA provider only (TensorRT builds its own fp16
    engine from the fp32 graph; CPU kernels are fp32, where fp16 would only add casts)."""
    return options.precision == "fp16" and chosen[0] == PROVIDER_NAMES["cuda"]


def uses_io_binding(chosen: Sequence[str], options: RuntimeOptions) -> bool:
    """`auto`: IOBinding on a GPU provider (input copied once, output bound on the device), plain run on CPU."""
    if options.io_binding == "auto":
        return chosen[0] in GPU_PROVIDERS
    return options.io_binding == "always"


def preload_gpu_libraries() -> None:
    """Load CUDA and cuDNN from the nvidia-* wheels (the gpu-cu12 / gpu-cu13 extras) before the first GPU
    session, so no system CUDA install or LD_LIBRARY_PATH is needed; a no-op on CPU builds."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    try:
        preload()
    except (OSError, RuntimeError) as exc:  # a system CUDA install may still serve
        log.warning("onnxruntime.preload_dlls() failed (%s); relying on the system's CUDA libraries", exc)


def fp16_model(source: Path | bytes) -> bytes:
    """The model (a file or its bytes) with its weights and arithmetic in fp16, inputs and outputs left fp32
    (needs the `onnx` package, which the gpu extras install)."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16
    except ImportError as exc:
        raise ModelError(
            "detect.precision: fp16 on the CUDA provider converts the graph with the onnx package; install the "
            "gpu extra (`pip install 'vigil[gpu-cu12]'`) or set detect.precision: fp32"
        ) from exc
    proto = onnx.load_from_string(source) if isinstance(source, bytes) else onnx.load(str(source))
    converted = convert_float_to_float16(proto, keep_io_types=True)
    return bytes(converted.SerializeToString())


def create_session(
    path: Path,
    providers: Sequence[str] = ("auto",),
    intra_op_threads: int = 0,
    available: Sequence[str] | None = None,
    options: RuntimeOptions | None = None,
    free_spatial: bool = False,
) -> ort.InferenceSession:
    """Load `path` with the chosen providers; a missing or corrupt file becomes a `ModelError` with the fix.
    `options` (when given) supersedes `providers` and `intra_op_threads`. `free_spatial`: the graph's input
    height and width are made symbolic first (`models.onnx_shapes`), so it runs at rectangular sizes."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check detect.model / the manifest's path")
    options = options or RuntimeOptions(tuple(providers), intra_op_threads)
    chosen = choose_providers(options.providers, ort.get_available_providers() if available is None else available)
    options = resolve_layout(options, chosen[0])
    if chosen[0] in GPU_PROVIDERS:
        preload_gpu_libraries()
    model: str | bytes = str(path)
    if free_spatial:
        try:
            model = free_spatial_dims(path.read_bytes())
        except ModelError as exc:
            raise ModelError(
                f"cannot load model {path}: {exc}; the file is corrupt or not ONNX — restore it (check `vigil "
                "models verify`) or re-export it"
            ) from exc
    if wants_fp16_graph(chosen, options):
        model = fp16_model(model if isinstance(model, bytes) else path)
    try:
        session = ort.InferenceSession(
            model,
            sess_options=session_options(options),
            providers=chosen,
            provider_options=provider_options(chosen, options),
        )
    except ORT_ERRORS as exc:
        raise ModelError(
            f"cannot load model {path}: {str(exc).splitlines()[0][:300]}; the file is corrupt or not ONNX — "
            "restore it (check `vigil models verify`) or re-export it"
        ) from exc
    log.info(
        "model %s runs on %s (lanes=%d, threads=%s, spin_wait=%s, precision=%s)", path.name,
        session.get_providers()[0], options.lanes, options.intra_op_threads or "auto", options.spin_wait,
        options.precision,
    )  # fmt: skip
    return session


def make_runner(
    session: ort.InferenceSession, options: RuntimeOptions
) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    """`runner(tensor) -> first output`: plain `session.run`, or through IOBinding (see `uses_io_binding`)."""
    input_name = session.get_inputs()[0].name
    if not uses_io_binding(session.get_providers(), options):

        def run(tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
            result: npt.NDArray[np.float32] = session.run(None, {input_name: tensor})[0]
            return result

        return run
    output_name = session.get_outputs()[0].name
    device = "cuda" if session.get_providers()[0] in GPU_PROVIDERS else "cpu"
    device_id = options.device_id if device == "cuda" else 0

    def run_bound(tensor: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # The whole batch goes to the device in one copy; intermediate and output tensors stay there until
        # the output is copied back once (a binding per call: the worker's one inference thread and the
        # HTTP API's request threads may share a session).
        binding = session.io_binding()
        binding.bind_ortvalue_input(input_name, ort.OrtValue.ortvalue_from_numpy(tensor, device, device_id))
        binding.bind_output(output_name, device, device_id)
        session.run_with_iobinding(binding)
        result: npt.NDArray[np.float32] = binding.copy_outputs_to_cpu()[0]
        return result

    return run_bound
