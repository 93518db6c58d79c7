"""Export an ultralytics `.pt` checkpoint or model YAML to ONNX (dynamic batch) and register it.

Only `vigil models export` imports this module; it is the one place that loads ultralytics/torch.
"""

from __future__ import annotations

import ast
import logging
import os
import shutil
import tempfile
from pathlib import Path

from models.manifest import ModelManifest
from models.registry import sha256_of
from vigil.errors import ModelError

log = logging.getLogger(__name__)


def _offline_env() -> None:
    # Must be set before ultralytics is imported: no downloads, no pip auto-installs of "missing" requirements.
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"


def read_ultralytics_metadata(onnx_file: Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(onnx_file), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def model_argument(source: str, work: Path) -> str:
    """What to give ultralytics' `YOLO()` while the export runs inside `work` (its working folder there): a
    checkpoint is copied into `work`; a YAML file that exists is given by absolute path, since a relative one no
    longer resolves from `work`; any other YAML name (e.g. yolo11n.yaml) is passed on for ultralytics to find
    among the model configs it ships."""
    src = Path(source)
    if src.suffix not in (".yaml", ".yml"):
        return str(shutil.copy(src, work / src.name))
    return str(src.resolve()) if src.is_file() else source


def export_model(
    source: str,
    registry_dir: Path,
    name: str | None = None,
    imgsz: int = 640,
    opset: int | None = None,
    licence: str | None = None,
) -> ModelManifest:
    """Export `source` to `<registry_dir>/<name>.onnx`, check it with onnx.checker, write `<name>.yaml`."""
    _offline_env()
    try:
        import onnx
        from ultralytics import YOLO  # type: ignore[attr-defined]
    except ImportError as exc:
        raise ModelError(f"model export needs the export extra: pip install 'vigil[export]' ({exc})") from exc
    if imgsz % 32:
        raise ModelError(f"--imgsz must be a multiple of 32, got {imgsz}")
    src = Path(source)
    is_yaml = src.suffix in (".yaml", ".yml")
    if not is_yaml and not src.is_file():
        raise ModelError(f"{source} does not exist; give a .pt checkpoint or an ultralytics model YAML")
    name = name or src.stem
    registry_dir.mkdir(parents=True, exist_ok=True)
    target = registry_dir / f"{name}.onnx"
    with tempfile.TemporaryDirectory(prefix="vigil-export-") as work:
        # ultralytics writes the .onnx next to the source (or into the cwd for a YAML): keep that out of the repo.
        local = model_argument(source, Path(work))
        cwd = os.getcwd()
        os.chdir(work)
        try:
            try:
                model = YOLO(str(local), task="detect")
            except FileNotFoundError as exc:
                raise ModelError(
                    f"{source}: {exc}; give an existing .pt or .yaml path, or an ultralytics model name (yolo11n.yaml)"
                ) from exc
            if getattr(model, "task", "detect") != "detect":
                raise ModelError(f"{source} is a {model.task} model; vigil registers detection models only")
            exported = Path(
                model.export(format="onnx", dynamic=True, imgsz=imgsz, opset=opset, simplify=True, batch=1)
            ).resolve()
        finally:
            os.chdir(cwd)
        shutil.move(str(exported), target)
    onnx.checker.check_model(str(target))
    meta = read_ultralytics_metadata(target)
    try:
        names_map = ast.literal_eval(meta["names"])
        class_names = tuple(str(names_map[i]) for i in range(len(names_map)))
        size = ast.literal_eval(meta.get("imgsz", f"[{imgsz}, {imgsz}]"))
    except (KeyError, ValueError, SyntaxError) as exc:
        raise ModelError(f"{target} lacks readable ultralytics metadata (names/imgsz): {exc}") from exc
    manifest = ModelManifest(
        name=name,
        version=f"ultralytics {meta.get('version', '?')}" + (" (untrained, from YAML)" if is_yaml else ""),
        family="ultralytics",
        path=target.name,
        input_size=(int(size[0]), int(size[1])),
        channel_order="rgb",
        scale=1 / 255,
        letterbox="center",
        pad_value=114,
        class_names=class_names,
        sha256=sha256_of(target),
        dynamic_batch=True,
        licence=licence or meta.get("license", "AGPL-3.0").split(" ")[0],
        source=f"exported by `vigil models export {source}` from {meta.get('description', source)}",
        manifest_dir=registry_dir,
    )
    manifest.save(registry_dir / f"{name}.yaml")
    log.info("exported %s -> %s (%d classes, input %s)", source, target, len(class_names), list(manifest.input_size))
    return manifest
