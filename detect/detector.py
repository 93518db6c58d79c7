"""`Detector`: frames in, `Detections` out — preprocess -> infer -> decode -> NMS -> map back.

The worker, `vigil predict`, `vigil models verify`-style checks and the benchmark all use this one class, so
what is measured and tested is what runs in production. The three steps are separate methods so a caller can
overlap preparing the next batch with inferring the current one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from detect.decoders import UltralyticsDecoder, YoloxDecoder, make_decoder
from detect.nms import batched_nms
from detect.preprocess import Letterbox, LetterboxPreprocessor, PreparedBatch
from detect.runtime import RuntimeOptions, create_session, make_runner, resolve_layout
from models import ModelManifest, Registry
from models.onnx_errors import ORT_ERRORS
from vigil.config import DetectConfig
from vigil.detections import Detections
from vigil.errors import ModelError
from vigil.imaging import DEFAULT_MAX_PIXELS, ImageInfo, decode_image, probe_image, reduction_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Thresholds:
    conf: float = 0.25
    iou: float = 0.45
    max_detections: int = 300


class Detector:
    """A loaded model. Construct with `Detector.load(...)` / `Detector.from_config(...)`; the constructor
    only wires parts together."""

    def __init__(
        self,
        manifest: ModelManifest,
        session: ort.InferenceSession,
        decoder: UltralyticsDecoder | YoloxDecoder,
        thresholds: Thresholds = Thresholds(),
        class_names: Sequence[str] | None = None,
        options: RuntimeOptions | None = None,
        reduced_decode: bool = True,
        rect_stride: int | None = None,
    ) -> None:
        self.manifest = manifest
        self.session = session
        self.decoder = decoder
        self.thresholds = thresholds
        self.class_names = tuple(class_names or manifest.class_names)
        self.preprocessor = LetterboxPreprocessor(
            manifest.input_size,
            manifest.channel_order,
            manifest.scale,
            manifest.letterbox,
            manifest.pad_value,
            rect_stride,
        )
        # Rectangular canvases (`detect.rect_input`): the graph's input height and width were freed at load.
        self.rect = rect_stride is not None
        # The layout the session was built with (lanes and threads made concrete for its provider).
        self.options = resolve_layout(options or RuntimeOptions(), session.get_providers()[0])
        self.runner = make_runner(session, self.options)
        # Lanes > 1: a batch's frames run side by side on these threads, on the one session (ONNX Runtime
        # allows concurrent runs); its threads start with the first batch that uses them.
        self.lanes = self.options.lanes
        self._lane_pool = ThreadPoolExecutor(self.lanes, "detect-lane") if self.lanes > 1 else None
        # JPEG frames at least twice the letterboxed input are decoded at 1/2, 1/4 or 1/8 in the DCT domain.
        self.reduced_decode = reduced_decode
        model_input = session.get_inputs()[0]
        self.input_name: str = model_input.name
        batch_dim = model_input.shape[0]
        # A graph exported with a fixed batch (int) must be fed exactly that many frames per run.
        self.fixed_batch: int | None = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    # ---------------------------------------------------------------------------------------- loading

    @classmethod
    def load(
        cls,
        manifest: ModelManifest,
        providers: Sequence[str] = ("auto",),
        intra_op_threads: int = 0,
        thresholds: Thresholds = Thresholds(),
        class_names: Sequence[str] | None = None,
        verify_hash: bool = True,
        options: RuntimeOptions | None = None,
        reduced_decode: bool = True,
        rect_input: bool = True,
    ) -> Detector:
        """`options` (threads, spinning, precision, IOBinding) supersedes `providers` and `intra_op_threads`.
        `rect_input`: letterbox frames to their own aspect when the manifest says the graph allows it."""
        path = Registry.check_file(manifest, verify_hash=verify_hash)
        options = options or RuntimeOptions(tuple(providers), intra_op_threads)
        rect = rect_input and manifest.rect_input
        session = create_session(path, options=options, free_spatial=rect)
        names = tuple(class_names or manifest.class_names)
        if class_names and len(class_names) != len(manifest.class_names):
            raise ModelError(
                f"detect.class_names has {len(class_names)} names but model {manifest.name!r} has "
                f"{len(manifest.class_names)} classes; list exactly one name per class"
            )
        model_input = session.get_inputs()[0]
        dims = model_input.shape
        if len(dims) != 4 or any(
            isinstance(d, int) and d != e for d, e in zip(dims[1:], (3, *manifest.input_size), strict=True)
        ):
            raise ModelError(
                f"model {manifest.name!r}: input {model_input.name!r} has shape {dims}, expected "
                f"[B, 3, {manifest.input_size[0]}, {manifest.input_size[1]}] per the manifest's input_size"
            )
        # Probe once: gives the concrete output shape (dynamic exports declare symbolic dims) and warms up.
        probe_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1
        probe = np.zeros((probe_batch, 3, *manifest.input_size), np.float32)
        try:
            output = session.run(None, {model_input.name: probe})[0]
        except ORT_ERRORS as exc:
            raise ModelError(f"model {manifest.name!r} failed its first inference: {exc}") from exc
        decoder = make_decoder(
            manifest.family, tuple(output.shape), len(names), manifest.input_size, manifest.strides, manifest.name
        )
        stride = max(manifest.strides)
        if rect:
            _probe_rect(session, manifest, decoder, probe_batch, stride)
        return cls(manifest, session, decoder, thresholds, names, options, reduced_decode, stride if rect else None)

    @classmethod
    def from_config(
        cls,
        config: DetectConfig,
        model: str | None = None,
        conf: float | None = None,
        iou: float | None = None,
        registry: Registry | None = None,
    ) -> Detector:
        """The one way every command (worker, predict, serve, eval, benchmarks) loads the configured model.

        `model`, `conf` and `iou` override the config's (`vigil predict --model/--conf/--iou`). The registry is
        `detect.models_dir`, where the default relative `models` falls back to the manifests shipped with vigil
        when the working folder has none."""
        registry = registry or Registry.at(config.models_dir)
        manifest = registry.resolve(model or config.model)
        thresholds = Thresholds(
            config.conf_threshold if conf is None else conf,
            config.iou_threshold if iou is None else iou,
            config.max_detections,
        )
        return cls.load(
            manifest,
            thresholds=thresholds,
            class_names=config.class_names,
            options=RuntimeOptions(
                tuple(config.providers),
                config.intra_op_threads,
                config.spin_wait,
                config.precision,
                config.io_binding,
                config.device_id,
                config.lanes,
            ),
            reduced_decode=config.reduced_decode,
            rect_input=config.rect_input,
        )

    # ---------------------------------------------------------------------------------------- steps

    @property
    def provider(self) -> str:
        providers: list[str] = self.session.get_providers()
        return providers[0]

    def preprocess(self, images: Sequence[npt.NDArray[np.uint8]]) -> PreparedBatch:
        return self.preprocessor(list(images))

    def reduction(self, width: int, height: int) -> int:
        """The JPEG DCT-domain downscale (1, 2, 4, 8) for a frame of `width` x `height`: the largest that still
        covers the letterboxed input, so only frames at least twice its size are reduced; 1 when off."""
        if not self.reduced_decode:
            return 1
        box = self.preprocessor.fit(width, height)
        return reduction_for(ImageInfo("jpeg", width, height), box.new_w, box.new_h)

    def infer(
        self,
        tensor: npt.NDArray[np.float32],
        split: bool = True,
        canvases: Sequence[tuple[int, int]] | None = None,
    ) -> npt.NDArray[np.float32]:
        """One batched run, or, for a fixed-batch graph, runs of exactly that batch (the last one padded); with
        several lanes and `split` the batch is split into runs that go side by side, one per lane at a time.
        The detect worker runs whole batches on its lanes instead (`split=False`, one batch per lane).

        `canvases` (rectangular input: each row's (H, W), `PreparedBatch.canvases`): each row runs at its own
        canvas and the outputs are laid into the grid of the largest, so a frame's detections never depend on
        the other frames of its batch (the tensor may be larger still; what lies outside a row's canvas is
        never read)."""
        if canvases is None or not self.rect:
            return self._infer_rows(tensor, split)
        if len(canvases) != tensor.shape[0]:
            raise ModelError(f"{len(canvases)} canvases for a batch tensor of shape {list(tensor.shape)}")
        largest = (max(c[0] for c in canvases), max(c[1] for c in canvases))
        groups = sorted(set(canvases))
        if len(groups) == 1 and groups[0] == (tensor.shape[2], tensor.shape[3]):
            return self._infer_rows(tensor, split)
        output: npt.NDArray[np.float32] | None = None
        for canvas in groups:
            rows = [i for i, c in enumerate(canvases) if c == canvas]
            part = self._infer_rows(np.ascontiguousarray(tensor[rows, :, : canvas[0], : canvas[1]]), split)
            if canvas != largest:
                part = self.decoder.embed(part, canvas, largest)
            if output is None:
                output = np.empty((tensor.shape[0], *part.shape[1:]), np.float32)
            output[rows] = part
        assert output is not None
        return output

    def _infer_rows(self, tensor: npt.NDArray[np.float32], split: bool) -> npt.NDArray[np.float32]:
        n = tensor.shape[0]
        pool = self._lane_pool if split else None
        if self.fixed_batch is None:
            if pool is None or n == 1:
                return self.runner(tensor)
            chunks = np.array_split(tensor, min(self.lanes, n))
        else:
            size = self.fixed_batch
            chunks = []
            for start in range(0, n, size):
                chunk = tensor[start : start + size]
                if chunk.shape[0] < size:
                    chunk = np.concatenate([chunk, np.zeros((size - chunk.shape[0], *chunk.shape[1:]), chunk.dtype)])
                chunks.append(chunk)
        if pool is None or len(chunks) == 1:
            outputs = [self.runner(chunk) for chunk in chunks]
        else:
            outputs = list(pool.map(self.runner, chunks))
        return np.concatenate(outputs)[:n]

    def postprocess(self, output: npt.NDArray[np.float32], prepared: PreparedBatch) -> list[Detections]:
        """Decode, class-aware NMS over the whole batch at once, then boxes back to each frame's pixels."""
        t = self.thresholds
        # The input size the output is for: the largest canvas (`infer` lays smaller ones into its grid).
        candidates = self.decoder(output, t.conf, self.preprocessor.canvas(prepared.boxes))
        groups = candidates.image.astype(np.int64) * len(self.class_names) + candidates.class_id
        keep = batched_nms(candidates.xyxy, candidates.confidence, groups, t.iou)
        kept_image = candidates.image[keep]
        results = []
        for index, box in enumerate(prepared.boxes):
            rows = keep[kept_image == index][: t.max_detections]  # already best-first
            results.append(
                Detections(
                    xyxy=box.to_source(candidates.xyxy[rows]),
                    confidence=candidates.confidence[rows],
                    class_id=candidates.class_id[rows],
                )
            )
        return results

    def __call__(self, images: Sequence[npt.NDArray[np.uint8]]) -> list[Detections]:
        if not images:
            return []
        prepared = self.preprocess(images)
        return self.postprocess(self.infer(prepared.tensor, canvases=prepared.canvases), prepared)

    def stream(
        self, batches: Iterable[Sequence[bytes]], decode_threads: int = 2, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> Iterator[list[Detections]]:
        """Detections for batches of encoded frames, decoding + letterboxing batch n+1 in a thread pool
        while batch n infers (cv2 and onnxruntime both release the GIL). Undecodable frames, and images
        over `max_pixels`, raise `ContractError`."""
        with ThreadPoolExecutor(decode_threads, thread_name_prefix="detect-prep") as pool:

            def place(encoded: bytes, info: ImageInfo, box: Letterbox, out: npt.NDArray[np.float32]) -> Letterbox:
                image = decode_image(encoded, max_pixels, reduce=self.reduction(info.width, info.height))
                return self.preprocessor.place(image, out, box)

            def prepare(encoded: Sequence[bytes]) -> PreparedBatch:
                infos = [probe_image(data) for data in encoded]
                boxes = [self.preprocessor.fit(info.width, info.height) for info in infos]
                tensor = self.preprocessor.tensor(len(encoded), self.preprocessor.canvas(boxes))
                placed = pool.map(lambda i: place(encoded[i], infos[i], boxes[i], tensor[i]), range(len(encoded)))
                return PreparedBatch(tensor, tuple(placed))

            with ThreadPoolExecutor(1, thread_name_prefix="detect-prefetch") as prefetch:
                iterator = iter(batches)
                first = next(iterator, None)
                pending = prefetch.submit(prepare, first) if first is not None else None
                while pending is not None:
                    prepared = pending.result()
                    following = next(iterator, None)
                    pending = prefetch.submit(prepare, following) if following is not None else None
                    yield self.postprocess(self.infer(prepared.tensor, canvases=prepared.canvases), prepared)

    def names_of(self, detections: Detections) -> tuple[str, ...]:
        return tuple(self.class_names[i] for i in detections.class_id)


def _probe_rect(
    session: ort.InferenceSession,
    manifest: ModelManifest,
    decoder: UltralyticsDecoder | YoloxDecoder,
    batch: int,
    stride: int,
) -> None:
    """Refuse at load a manifest that claims `rect_input` for a graph that cannot run at a smaller canvas (a
    fixed-size export computes its anchors in the graph, so its output no longer fits the decoder)."""
    h, w = manifest.input_size
    size = (h - stride, w) if h > stride else (h, w - stride)
    fix = (
        f"set rect_input: false in the manifest of {manifest.name!r} (or detect.rect_input: false), or re-export "
        "it with a dynamic input size (`vigil models export`)"
    )
    try:
        output = session.run(None, {session.get_inputs()[0].name: np.zeros((batch, 3, *size), np.float32)})[0]
    except ORT_ERRORS as exc:
        raise ModelError(
            f"model {manifest.name!r} does not run at a {size[1]}x{size[0]} input: {str(exc).splitlines()[0][:200]}; "
            f"{fix}"
        ) from exc
    if not decoder.accepts(tuple(output.shape), size):
        raise ModelError(
            f"model {manifest.name!r} at a {size[1]}x{size[0]} input gives output {list(output.shape)}, expected "
            f"{decoder.expected_shape(size)}; {fix}"
        )
