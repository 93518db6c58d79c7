"""Does `detect.model` name a model that exists? Checked when a config file is loaded (file I/O, so
here and not in a pydantic validator), so every command refuses a config naming an unknown model at
start instead of when a worker first loads it.

The registry folder is `detect.models_dir`; the default relative `models` falls back to the manifests
shipped with vigil (the `models` package installed beside `vigil`) when the working folder has none.
A registry's models are its manifest files (`NAME.yaml`), as `models.Registry.get` looks them up.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from vigil.config.detect import DetectConfig
from vigil.errors import ConfigIssue

# Found by path, not imported: the core imports no stage or registry code.
BUILTIN_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
MANIFEST_SUFFIXES = (".yaml", ".yml")
MODEL_FILE_SUFFIXES = (".onnx", *MANIFEST_SUFFIXES)


def registry_dir(models_dir: str | Path | None) -> Path:
    """The folder `models_dir` names, or the built-in registry for None and for a relative `models`
    that the working folder does not have."""
    if models_dir is None:
        return BUILTIN_MODELS_DIR
    path = Path(models_dir)
    if not path.is_absolute() and not path.is_dir() and str(models_dir) == "models":
        return BUILTIN_MODELS_DIR
    return path


def registered_models(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())


def model_issues(detect: DetectConfig) -> list[ConfigIssue]:
    """Problems with `detect.model` / `detect.models_dir`, each naming its key (lines are added by the loader)."""
    model = detect.model
    if model.endswith(MODEL_FILE_SUFFIXES) or "/" in model:
        if not Path(model).is_file():
            return [ConfigIssue("detect.model", f"model file {model} does not exist; give a path or a registry name")]
        return []
    directory = registry_dir(detect.models_dir)
    if not directory.is_dir():
        return [
            ConfigIssue(
                "detect.models_dir",
                f"model registry folder {directory} does not exist; set detect.models_dir to the folder of the "
                "model manifests (`vigil models list --models-dir DIR` shows what one holds)",
            )
        ]
    names = registered_models(directory)
    if model in names:
        return []
    close = difflib.get_close_matches(model, names, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return [
        ConfigIssue(
            "detect.model",
            f"unknown model {model!r}; {hint}registered in {directory}: {', '.join(names) or 'none'} "
            "(`vigil models list` shows them; `vigil models export` adds one)",
        )
    ]
