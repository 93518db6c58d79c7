"""ONNX Runtime sessions: provider choice, threads, and loading errors that say how to fix them."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from models.onnx_errors import ORT_ERRORS
from vigil.errors import ModelError

log = logging.getLogger(__name__)


PROVIDER_NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
# `auto` tries these, best first.
AUTO_ORDER = ("tensorrt", "cuda", "cpu")


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
            f"{', '.join(available)}); install onnxruntime-gpu (`pip install vigil[gpu]`) for cuda/tensorrt, "
            "or set detect.providers: [auto] or [cpu]"
        )
    return chosen


def create_session(
    path: Path,
    providers: Sequence[str] = ("auto",),
    intra_op_threads: int = 0,
    available: Sequence[str] | None = None,
) -> ort.InferenceSession:
    """Load `path` with the chosen providers; a missing or corrupt file becomes a `ModelError` with the fix."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check detect.model / the manifest's path")
    chosen = choose_providers(providers, ort.get_available_providers() if available is None else available)
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    # One graph runs at a time per worker; parallelism comes from intra-op threads and the decode pool.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except ORT_ERRORS as exc:
        raise ModelError(
            f"cannot load model {path}: {str(exc).splitlines()[0][:300]}; the file is corrupt or not ONNX — "
            "restore it (check `vigil models verify`) or re-export it"
        ) from exc
    log.info("model %s runs on %s (threads=%s)", path.name, session.get_providers()[0], intra_op_threads or "auto")
    return session
