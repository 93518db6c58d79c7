"""`Registry`: a folder of model manifests (`*.yaml`) and the ONNX files they point to."""

from __future__ import annotations

import builtins
import hashlib
from pathlib import Path

from models.manifest import MANIFEST_SUFFIXES, ModelManifest
from vigil.config.registry import BUILTIN_MODELS_DIR, registry_dir
from vigil.errors import ModelError

# The manifests committed with vigil live beside this module (the folder vigil.config.registry names).
BUILTIN_DIR = BUILTIN_MODELS_DIR


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Registry:
    """Models by name. Nothing is read until asked (no I/O in the constructor)."""

    def __init__(self, directory: str | Path = BUILTIN_DIR) -> None:
        self.directory = Path(directory)

    @classmethod
    def at(cls, directory: str | Path | None) -> Registry:
        """The registry in `directory`; the default relative `models` falls back to the manifests shipped with
        vigil when the current folder has none, so commands work from any working directory."""
        return cls(registry_dir(directory))

    def _manifest_files(self) -> list[Path]:
        if not self.directory.is_dir():
            raise ModelError(
                f"model registry folder {self.directory} does not exist; set detect.models_dir or pass --models-dir"
            )
        return sorted(p for p in self.directory.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())

    def manifests(self) -> list[ModelManifest]:
        return [ModelManifest.load(p) for p in self._manifest_files()]

    list = manifests  # `registry.list()`, named so it does not shadow the builtin in annotations

    def names(self) -> builtins.list[str]:
        return [m.name for m in self.manifests()]

    def get(self, name: str) -> ModelManifest:
        for suffix in MANIFEST_SUFFIXES:
            file = self.directory / f"{name}{suffix}"
            if file.is_file():
                manifest = ModelManifest.load(file)
                if manifest.name != name:
                    raise ModelError(f"manifest {file} declares name {manifest.name!r}; rename the file or the name")
                return manifest
        known = ", ".join(self.names()) or "none"
        raise ModelError(
            f"no model named {name!r} in registry {self.directory} (known: {known}); "
            "run `vigil models list` or export one with `vigil models export`"
        )

    def resolve(self, name_or_path: str) -> ModelManifest:
        """A registry name, a manifest file, or an .onnx file that has a manifest beside it or in the registry."""
        candidate = Path(name_or_path)
        if candidate.suffix in MANIFEST_SUFFIXES and candidate.is_file():
            return ModelManifest.load(candidate)
        if candidate.suffix == ".onnx":
            for suffix in MANIFEST_SUFFIXES:
                beside = candidate.with_suffix(suffix)
                if beside.is_file():
                    return ModelManifest.load(beside)
            if not candidate.is_file():
                raise ModelError(f"model file {candidate} does not exist; check the path or use a registry name")
            resolved = candidate.resolve()
            for manifest in self.manifests():
                if manifest.onnx_path == resolved:
                    return manifest
            raise ModelError(
                f"{candidate} has no manifest (expected {candidate.with_suffix('.yaml')} or an entry in "
                f"{self.directory}); export it with `vigil models export` or write a manifest"
            )
        return self.get(name_or_path)

    @staticmethod
    def check_file(manifest: ModelManifest, verify_hash: bool = True) -> Path:
        """The manifest's ONNX path, after checking that it exists and (optionally) its sha256."""
        path = manifest.onnx_path
        if not path.is_file():
            raise ModelError(
                f"model {manifest.name!r}: file {path} is missing; lay the shared data beside the clone "
                "(../shared/data/models) or re-export it with `vigil models export`"
            )
        if verify_hash:
            actual = sha256_of(path)
            if actual != manifest.sha256:
                raise ModelError(
                    f"model {manifest.name!r}: {path} has sha256 {actual[:12]}…, manifest says "
                    f"{manifest.sha256[:12]}…; the file is corrupt or replaced — restore it or re-export"
                )
        return path
