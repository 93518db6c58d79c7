"""Build step of the vigil images: copy the model manifests into the image's registry folder with
each ONNX path pointed at `weights/<file>` beside them.

In git, manifests point at `../../shared/data/models/...` (the shared data laid beside the clone);
that path does not exist in a container. The ONNX files themselves are baked into or mounted at
`<registry>/weights/` (see deploy/README.md); the manifest's sha256 still pins each file.

    python stage_models.py SOURCE_DIR REGISTRY_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath

from models.manifest import MANIFEST_SUFFIXES, ModelManifest

WEIGHTS = "weights"


def stage(source: Path, registry: Path) -> list[Path]:
    """Write a rewritten copy of every manifest in `source` to `registry`; returns the files written."""
    registry.mkdir(parents=True, exist_ok=True)
    (registry / WEIGHTS).mkdir(exist_ok=True)
    written = []
    for file in sorted(p for p in source.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file()):
        manifest = ModelManifest.load(file)  # a broken manifest fails the image build, naming the file
        filename = PurePosixPath(manifest.path.replace("\\", "/")).name
        target = registry / f"{manifest.name}.yaml"
        manifest.model_copy(update={"path": f"{WEIGHTS}/{filename}"}).save(target)
        written.append(target)
    if not written:
        raise SystemExit(f"no model manifests (*.yaml) in {source}; the image would have an empty registry")
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    for target in stage(Path(argv[0]), Path(argv[1])):
        print(f"staged {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
