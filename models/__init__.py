"""vigil model registry: manifests (YAML) describing ONNX detectors, and their export."""

from models.manifest import ModelManifest
from models.registry import BUILTIN_DIR, Registry, sha256_of

__all__ = ["BUILTIN_DIR", "ModelManifest", "Registry", "sha256_of"]
