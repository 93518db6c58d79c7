"""`vigil models list | verify | export`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from models.manifest import ModelManifest
from models.onnx_errors import ORT_ERRORS
from models.registry import Registry
from vigil.errors import ModelError
from vigil.settings import resolve_config


def _registry(args: argparse.Namespace) -> Registry:
    if args.models_dir:
        return Registry(args.models_dir)
    config = resolve_config(args.config, args.log_level)
    return Registry.at(config.detect.models_dir)


def list_main(args: argparse.Namespace) -> int:
    registry = _registry(args)
    print(f"registry: {registry.directory}")
    for m in registry.list():
        present = "ok" if m.onnx_path.is_file() else "MISSING"
        print(
            f"{m.name:<20} {m.family:<12} {m.input_size[0]}x{m.input_size[1]} {m.channel_order} "
            f"{len(m.class_names):>3} classes  batch={'dynamic' if m.dynamic_batch else 'fixed'}  "
            f"input={'rect' if m.rect_input else 'square'}  "
            f"{m.licence:<12} [{present}] {m.onnx_path}"
        )
    return 0


def verify_one(manifest: ModelManifest) -> str:
    """sha256, load, one inference on a grey frame; returns a one-line summary or raises ModelError."""
    import onnxruntime as ort

    path = Registry.check_file(manifest, verify_hash=True)
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        model_input = session.get_inputs()[0]
        batch = model_input.shape[0] if isinstance(model_input.shape[0], int) else 1
        started = time.perf_counter()
        output = session.run(None, {model_input.name: np.full((batch, 3, *manifest.input_size), 0.5, np.float32)})
        elapsed = (time.perf_counter() - started) * 1000
    except ORT_ERRORS as exc:
        raise ModelError(f"model {manifest.name!r}: {path} does not load or run: {exc}") from exc
    return f"{manifest.name}: ok (sha256 matches, output {list(output[0].shape)}, {elapsed:.0f} ms on CPU)"


def verify_main(args: argparse.Namespace) -> int:
    registry = _registry(args)
    manifests = [registry.get(n) for n in args.names] if args.names else registry.list()
    failed = 0
    for manifest in manifests:
        try:
            print(verify_one(manifest))
        except ModelError as exc:
            print(f"{manifest.name}: FAILED: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def export_main(args: argparse.Namespace) -> int:
    from models.export import export_model

    registry = _registry(args)
    manifest = export_model(args.source, Path(registry.directory), args.name, args.imgsz, args.opset, args.licence)
    print(
        f"exported {manifest.name} -> {manifest.onnx_path} (manifest {registry.directory / (manifest.name + '.yaml')})"
    )
    return 0
