"""The exceptions onnxruntime raises when loading or running a model.

They derive from `Exception` directly (not RuntimeError), so catching them needs this explicit tuple."""

from __future__ import annotations

from onnxruntime.capi import onnxruntime_pybind11_state as _state

ORT_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(_state, name)
    for name in (
        "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException",
        "InvalidProtobuf", "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail",
    )
    if hasattr(_state, name)
) + (RuntimeError, ValueError)  # fmt: skip
