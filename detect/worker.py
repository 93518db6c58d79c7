"""The detection function: frames topic -> batched inference -> detections topic, at least once.

Loop (one consumer thread, one inference thread per lane, a small decode pool):

1. gather up to `batch_size` records or `max_wait_ms`, polling the consumer (which also keeps the group alive);
2. triage each record — bad headers, oversized (bytes or declared pixels), unknown camera, an image whose size
   differs from its headers or that does not decode go to the dead-letter topic, frames older than `max_age_s`
   are counted and skipped — and decode + letterbox the rest in the thread pool (`detect.decode_concurrency`
   threads, so at most that many decoded frames of at most `detect.max_pixels` exist at once);
3. hand the tensor to a free lane (`detect.lanes`: one single-threaded inference per core on the CPU, each
   its own batch), and while the lanes run, gather and prepare the next batch;
4. decode/NMS the result and publish one `DetectionsRecord` per frame (keyed by camera); at most every
   `detect.commit_interval_ms` (and at a stop) wait for every send since the last commit (detections and dead
   letters) to be acknowledged, and only then commit those batches' offsets. Batches are
   published in the order they were gathered, whichever lane ends first, so a camera's records keep their
   order and a still frame's reference is always published before it.

Rebalances: kafka-python 3 runs the rebalance listener on its IO thread, where blocking consumer calls such as
`commit` are refused, so the listener only bumps a per-partition epoch. Records gathered under an older epoch of
their partition are dropped if not yet in a batch, and a batch in flight is published but not committed. A
partition that went to another member is redone from the committed offset by its new owner. One that came back
to this worker is not: the eager protocol revokes every partition and then keeps the fetch position of those
reassigned, which is past the dropped records, so the poll thread seeks such a partition back to its first
dropped record. Either way a frame may be detected twice (a duplicate, identifiable by its frame ref), never lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from detect import metrics
from detect.detector import Detector
from detect.preprocess import Letterbox, PreparedBatch
from detect.stationary import StillFramePlanner
from detect.triage import FrameGate, Rejection
from vigil.config import VigilConfig
from vigil.contracts import DetectionsRecord, FrameMeta, FrameRef, KafkaRecord, ModelRef, Timings
from vigil.delivery import Deliveries
from vigil.detections import Detections
from vigil.errors import ContractError
from vigil.imaging import BoundedDecoder, ImageSizeMismatchError, OversizedImageError
from vigil.kafka import DeadLetterPublisher, subscribe
from vigil.logs import log_repeated

log = logging.getLogger(__name__)
STAGE = "detect"


@dataclass(eq=False)
class Frame:
    """A record that passed triage: decoded into row `slot` of the batch tensor, or (`box` None) a still frame
    that reuses its camera's last detections (`detect.stationary`)."""

    record: KafkaRecord
    meta: FrameMeta
    box: Letterbox | None
    slot: int = -1
    decode_ms: float = 0.0
    queue_wait_ms: float = 0.0
    batch_wait_ms: float = 0.0


@dataclass(frozen=True)
class Inferred:
    """What a lane returns for a batch: its frames' detections, in slot order, and how long each step took."""

    results: list[Detections]
    infer_s: float
    wait_s: float  # the prepared batch waited this long for its lane
    post_ms: float


@dataclass
class Batch:
    """One gathered batch: what to detect, what was rejected, and the offsets it covers."""

    records: list[KafkaRecord]
    epochs: dict[TopicPartition, int]
    frames: list[Frame] = field(default_factory=list)
    # What the model runs: the detected frames' tensor rows and letterboxes, in slot order (None: all still).
    prepared: PreparedBatch | None = None
    rejected: list[tuple[KafkaRecord, Rejection]] = field(default_factory=list)
    stale: int = 0
    inference: Future[Inferred] | None = None
    prepared_at: float = 0.0  # perf_counter when the tensor was ready
    infer_started: float = 0.0  # perf_counter when its inference began (set by the inference thread)

    @property
    def detected(self) -> int:
        """Frames run through the model."""
        return 0 if self.prepared is None else len(self.prepared)

    def next_offsets(self) -> dict[TopicPartition, int]:
        """Per partition, the offset after the last record of this batch (what to commit)."""
        result: dict[TopicPartition, int] = {}
        for record in self.records:
            tp = TopicPartition(record.topic, record.partition)
            result[tp] = max(result.get(tp, 0), record.offset + 1)
        return result


@dataclass(frozen=True)
class Published:
    """A batch whose records are sent, not yet known to be acknowledged: what its commit needs."""

    next_offsets: dict[TopicPartition, int]
    epochs: dict[TopicPartition, int]
    frames: int
    detected: int


# ---------------------------------------------------------------------------------------------- rebalance


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO thread: only records what changed; the worker acts on it."""

    def __init__(self, worker: DetectWorker) -> None:
        self.worker = worker

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        self.worker.revoke(revoked)

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.worker.assign(assigned)


# ---------------------------------------------------------------------------------------------- worker


class DetectWorker:
    """Consumes frames, detects, publishes, commits. `run(stop)` returns when `stop` is set (after finishing
    and committing what it holds) and closes nothing it did not open."""

    def __init__(
        self,
        config: VigilConfig,
        detector: Detector,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        decode_threads: int | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config
        self.cfg = config.detect
        self.detector = detector
        self.consumer = consumer
        self.producer = producer
        self.gate = FrameGate(config)
        # Every send of a batch goes through `deliveries`, which re-sends what an outage expired.
        self.deliveries = Deliveries(producer, STAGE, log)
        self.dead_letters = DeadLetterPublisher(self.deliveries, config.topics.dead_letter.name, STAGE)
        self._stop = threading.Event()
        self.clock_ns = clock_ns
        self.model_ref = ModelRef(detector.manifest.name, detector.manifest.version)
        self.decode_threads = decode_threads or self.cfg.decode_concurrency
        self.decoder = BoundedDecoder(self.cfg.max_pixels, self.decode_threads)
        self.lag = metrics.LagRecorder()
        # Batches sent since the last commit, in order; settled (acknowledged) just before it.
        self._unsettled: list[Published] = []
        self._committed_at = time.monotonic()
        self._lock = threading.Lock()
        self._epoch: dict[TopicPartition, int] = {}
        self._assigned: set[TopicPartition] = set()
        # Per partition, the first offset dropped after a revocation and not yet fetched again.
        self._refetch: dict[TopicPartition, int] = {}
        # True from a revocation (or the start) until the next assignment: a dropped partition may still come back.
        self._awaiting_assignment = True
        # Records fetched beyond the current batch, with their epochs: polling for a handful of records
        # at a time leaves the consumer's fetch pipeline empty between batches, so a poll takes all
        # that is ready and the rest waits here (checked against revocations like any gathered record).
        self._surplus: list[tuple[KafkaRecord, int]] = []
        # When each gathered record was fetched (wall clock ns), for its batch_wait timing.
        self._fetched_ns: dict[tuple[str, int, int], int] = {}
        self.still = StillFramePlanner(self.cfg.stationary)
        # Per camera, the last detections published from the model, for still frames that reuse them.
        self._last: dict[str, tuple[FrameRef, Detections]] = {}
        self.published = 0
        self.batches = 0
        self.refetched = 0  # partitions sought back to records dropped at a rebalance
        self.inference_ms = 0.0  # wall time of every inference so far
        self.stale = 0
        self.reused = 0  # still frames published with their camera's last detections
        self._frame_infer_s = 0.005  # the last batch's inference time per frame, to time polls while one runs

    # -- rebalance bookkeeping (called on the IO thread) --------------------------------------------

    def revoke(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self._epoch[tp] = self._epoch.get(tp, 0) + 1
            self._assigned -= set(partitions)
            self._awaiting_assignment = True
        log.info("partitions revoked: %s (in-flight frames of these are published but not committed)",
                 sorted(f"{tp.topic}/{tp.partition}" for tp in partitions))  # fmt: skip

    def assign(self, partitions: set[TopicPartition]) -> None:
        with self._lock:
            self._assigned |= set(partitions)
            self._awaiting_assignment = False
        log.info("partitions assigned: %s", sorted(f"{tp.topic}/{tp.partition}" for tp in partitions))

    def totals(self) -> dict[str, float]:
        """Running totals for the heartbeat (which adds the per-second rates)."""
        return {
            "frames_detected": float(self.published),
            "batches": float(self.batches),
            "inference_ms": self.inference_ms,
            "dead_letters": float(self.dead_letters.count),
            "stale_dropped": float(self.stale),
            "still_reused": float(self.reused),
        }

    def _current(self, tp: TopicPartition, epoch: int) -> bool:
        with self._lock:
            return self._epoch.get(tp, 0) == epoch and tp in self._assigned

    def subscribe(self) -> None:
        subscribe(self.consumer, [self.config.topics.frames.name], listener=_Rebalance(self))

    # -- the loop -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        lanes = max(1, self.detector.lanes)  # batches inferring at once, each on its own single-threaded lane
        with (
            ThreadPoolExecutor(self.decode_threads, thread_name_prefix="detect-decode") as decode_pool,
            ThreadPoolExecutor(lanes, thread_name_prefix="detect-infer") as infer_pool,
        ):
            inflight: deque[Batch] = deque()  # submitted, not yet published; published oldest first
            while not stop.is_set():
                batch = self._gather(inflight, lanes)
                if batch is None:
                    if inflight:
                        self._finish(inflight.popleft())
                    else:
                        self._commit()  # idle: what the last batches left uncommitted, once the interval passed
                    continue
                self._prepare(batch, decode_pool)
                if len(inflight) == lanes:
                    assert inflight[0].inference is not None
                    inflight[0].inference.result()  # its lane is free: start the next batch first
                batch.inference = infer_pool.submit(self._infer, batch)
                inflight.append(batch)
                # Post-process + publish + commit overlap the inferences still running; in offset order.
                while len(inflight) > lanes or (len(inflight) > 1 and _done(inflight[0])):
                    self._finish(inflight.popleft())
            while inflight:
                self._finish(inflight.popleft())
            self._commit(force=True)
        log.info("detect worker stopped after %d batches, %d detections records", self.batches, self.published)

    def _gather(self, inflight: deque[Batch], lanes: int = 1) -> Batch | None:
        """Up to batch_size records. With a lane free a batch starts with what has arrived; while every lane
        infers, gathering goes on until the oldest batch is done (so its detections are published at once),
        the batch is full, or max_wait_ms passed."""
        wanted = self.cfg.batch_size
        prefetch = max(wanted, self.config.kafka.consumer.max_poll_records)
        records = self._valid(self._surplus)
        self._surplus = []
        deadline = time.monotonic() + self.cfg.max_wait_ms / 1000

        while len(records) < wanted:
            running = [b for b in inflight if not _done(b)]
            if records and len(running) < lanes:
                break  # a lane is free: start now rather than wait for companions
            if not records and inflight and _done(inflight[0]):
                break  # nothing new, the oldest batch is done: publish it
            remaining = deadline - time.monotonic()
            if records and remaining <= 0:
                break
            # Idle: a short blocking poll so `stop` is noticed. While batches infer: until the first should be
            # done (its frames x the last per-frame time), so its end is noticed within a few ms with few polls.
            if not inflight:
                timeout_ms = 200
            else:
                now = time.perf_counter()
                due = min((b.infer_started + b.detected * self._frame_infer_s - now for b in running), default=0.0)
                timeout_ms = max(2, min(int(max(remaining, 0) * 1000), int(due * 1000) + 1))
            asked = time.monotonic()
            polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=prefetch - len(records))
            if not polled and not inflight and time.monotonic() - asked < 0.01:
                # kafka-python returns at once, not after the timeout, while it has no group
                # coordinator: wait here instead of spinning a core until it finds one.
                time.sleep(0.1)
            fetched = time.time_ns()
            for tp, items in polled.items():
                with self._lock:
                    epoch = self._epoch.get(tp, 0)
                records.extend((item, epoch) for item in items)
                for item in items:
                    self._fetched_ns[(item.topic, item.partition, item.offset)] = fetched
            records = self._valid(records)
            if not polled and not records and not inflight:
                break
        if not records:
            return None
        records, self._surplus = _take_fairly(records, wanted)
        epochs = {TopicPartition(r.topic, r.partition): e for r, e in records}
        return Batch(records=[r for r, _ in records], epochs=epochs)

    def _valid(self, records: list[tuple[KafkaRecord, int]]) -> list[tuple[KafkaRecord, int]]:
        """Drop records a revocation (on the IO thread, at any time) made stale, noting them to be
        fetched again if their partition is, or comes back, ours."""
        kept: list[tuple[KafkaRecord, int]] = []
        for record, epoch in records:
            if self._current(TopicPartition(record.topic, record.partition), epoch):
                kept.append((record, epoch))
            else:
                self._note_dropped(TopicPartition(record.topic, record.partition), record.offset)
                self._fetched_ns.pop((record.topic, record.partition, record.offset), None)
        return self._seek_back(kept)

    def _note_dropped(self, tp: TopicPartition, offset: int) -> None:
        with self._lock:
            self._refetch[tp] = min(self._refetch.get(tp, offset), offset)

    def _seek_back(self, records: list[tuple[KafkaRecord, int]]) -> list[tuple[KafkaRecord, int]]:
        """Seek each partition that is ours again back to its first dropped record (on the poll thread: the
        consumer is not thread-safe), and drop gathered records at or past it, which are fetched again."""
        with self._lock:
            due = {tp: offset for tp, offset in self._refetch.items() if tp in self._assigned}
            for tp in due:
                del self._refetch[tp]
            if not self._awaiting_assignment:
                # The rest went to other members, which start from the committed offset, at or before them.
                self._refetch.clear()
        for tp, offset in due.items():
            try:
                self.consumer.seek(tp, offset)
            except ValueError:
                # Revoked again since the check: keep it for when it comes back (or goes to another member).
                self._note_dropped(tp, offset)
                continue
            self.refetched += 1
            records = [(r, e) for r, e in records if (r.topic, r.partition) != tp or r.offset < offset]
            log.info("partition %s/%d is still ours after a rebalance: fetching again from offset %d",
                     tp.topic, tp.partition, offset)  # fmt: skip
        return records

    def _prepare(self, batch: Batch, pool: ThreadPoolExecutor) -> None:
        """Triage, plan still frames, then decode + letterbox the others in parallel into the batch tensor."""
        now = self.clock_ns()
        metrics.FRAMES.inc(len(batch.records))
        accepted: list[Frame] = []
        stale: dict[str, int] = {}
        for record in batch.records:
            verdict = self.gate.check(record)
            if isinstance(verdict, Rejection):
                batch.rejected.append((record, verdict))
                if (camera := _camera_of(record)) is not None:
                    self.still.broken(camera)
            elif self.gate.is_stale(verdict, now):
                batch.stale += 1
                stale[verdict.camera_id] = stale.get(verdict.camera_id, 0) + 1
                self.still.broken(verdict.camera_id)
            else:
                metrics.QUEUE_AGE_SECONDS.observe(max(now - verdict.capture_ns, 0) / 1e9)
                fetched = self._fetched_ns.pop((record.topic, record.partition, record.offset), now)
                tp = TopicPartition(record.topic, record.partition)
                reuse = self.still.reuse(verdict, (record.topic, record.partition, batch.epochs[tp]))
                accepted.append(
                    Frame(
                        record,
                        verdict,
                        None if reuse else self.detector.preprocessor.fit(verdict.width, verdict.height),
                        queue_wait_ms=max(now / 1e6 - record.timestamp, 0.0) if record.timestamp > 0 else 0.0,
                        batch_wait_ms=max(now - fetched, 0) / 1e6,
                    )
                )
        for record in batch.records:  # records of this batch that never reached triage's accept branch
            self._fetched_ns.pop((record.topic, record.partition, record.offset), None)
        if batch.stale:
            metrics.DROPPED_STALE.inc(batch.stale)
            self.stale += batch.stale
            for camera, count in stale.items():
                log_repeated(
                    log, logging.INFO, "stale", camera, "camera %s: skipped %d frame(s) older than detect.max_age_s=%s",
                    camera, count, self.cfg.max_age_s,
                )  # fmt: skip
        pre = self.detector.preprocessor
        todo = [frame for frame in accepted if frame.box is not None]
        # Still frames count too: one that loses its reference below is decoded into this same canvas.
        canvas = pre.canvas(f.box or pre.fit(f.meta.width, f.meta.height) for f in accepted)
        tensor = pre.tensor(len(todo), canvas)
        rows = todo  # the frames in tensor row order: frame.slot is the index here
        for slot, frame in enumerate(rows):
            frame.slot = slot

        def place(frame: Frame) -> Rejection | None:
            started = time.perf_counter()
            meta = frame.meta
            try:
                reduce = self.detector.reduction(meta.width, meta.height)
                # The size check is against the declared (full) size; `box` maps the reduced image back to it.
                with self.decoder.decoded(
                    frame.record.value, expect_wh=(meta.width, meta.height), reduce=reduce
                ) as image:
                    pre.place(image, tensor[frame.slot], frame.box)
                    del image  # freed before its decode slot is
            except (OversizedImageError, ImageSizeMismatchError) as exc:
                return Rejection(exc.reason, f"{exc.reason}: {exc}")
            except ContractError as exc:
                return Rejection("decode", str(exc))
            frame.decode_ms = (time.perf_counter() - started) * 1000
            return None

        failed = {id(frame): r for frame, r in zip(todo, pool.map(place, todo), strict=True) if r is not None}
        while failed:
            # A frame that did not decode is refused; the still frames of its camera after it lose their
            # reference and are decoded themselves (rare: a second, small round).
            broken: set[str] = set()
            kept: list[Frame] = []
            redo: list[Frame] = []
            for frame in accepted:
                if id(frame) in failed:
                    batch.rejected.append((frame.record, failed[id(frame)]))
                    broken.add(frame.meta.camera_id)
                    self.still.broken(frame.meta.camera_id)
                    continue
                if frame.box is None and frame.meta.camera_id in broken:
                    frame.box = pre.fit(frame.meta.width, frame.meta.height)
                    redo.append(frame)
                kept.append(frame)
            decoded = [frame for frame in rows if id(frame) not in failed]
            tensor = np.concatenate([tensor[[frame.slot for frame in decoded]], pre.tensor(len(redo), canvas)])
            rows = decoded + redo  # the redone frames take the rows after the others
            for slot, frame in enumerate(rows):
                frame.slot = slot
            accepted = kept
            failed = {id(frame): r for frame, r in zip(redo, pool.map(place, redo), strict=True) if r is not None}
        batch.frames = accepted
        if rows:
            batch.prepared = PreparedBatch(tensor, tuple(frame.box for frame in rows if frame.box is not None))
        batch.prepared_at = time.perf_counter()

    def _infer(self, batch: Batch) -> Inferred:
        """Inference and post-processing (decode + NMS), on the batch's lane: the poll thread, which gathers,
        prepares and publishes every batch in turn, was the stack's serial step with NMS on it."""
        prepared = batch.prepared
        if prepared is None:
            return Inferred([], 0.0, 0.0, 0.0)
        started = batch.infer_started = time.perf_counter()
        # This thread is the batch's lane, so the batch is not split over others.
        output = self.detector.infer(prepared.tensor, split=False, canvases=prepared.canvases)
        seconds = time.perf_counter() - started
        with self._lock:  # lanes finish on their own threads
            self._frame_infer_s = seconds / max(1, batch.detected)
            self.inference_ms += seconds * 1000
        metrics.INFERENCE_SECONDS.observe(seconds)
        metrics.BATCH_SIZE.observe(batch.detected)
        post_started = time.perf_counter()
        results = self.detector.postprocess(output, prepared)
        post_ms = (time.perf_counter() - post_started) * 1000
        return Inferred(results, seconds, max(started - batch.prepared_at, 0.0), post_ms)

    def _finish(self, batch: Batch) -> None:
        """Publish every output (in offset order: still frames copy the latest detections of their camera);
        `_commit` waits for the acknowledgements before it commits."""
        assert batch.inference is not None
        inferred = batch.inference.result()
        infer_s, infer_wait_s, post_ms, results = inferred.infer_s, inferred.wait_s, inferred.post_ms, inferred.results
        for record, rejection in batch.rejected:
            metrics.DEAD_LETTER.labels(rejection.kind).inc()
            self.dead_letters.publish(record, rejection.reason, kind=rejection.kind)
        if batch.frames:
            produced = self.clock_ns()
            topic = self.config.topics.detections.name
            for frame in batch.frames:
                meta = frame.meta
                ref = FrameRef(frame.record.topic, frame.record.partition, frame.record.offset)
                reused_from: FrameRef | None = None
                if frame.box is not None:
                    detections = results[frame.slot]
                    self._last[meta.camera_id] = (ref, detections)
                    timings = Timings(
                        frame.decode_ms, infer_s * 1000, post_ms, frame.queue_wait_ms, frame.batch_wait_ms,
                        infer_wait_s * 1000,
                    )  # fmt: skip
                else:
                    reused_from, detections = self._last[meta.camera_id]
                    timings = Timings(queue_wait_ms=frame.queue_wait_ms, batch_wait_ms=frame.batch_wait_ms)
                out = DetectionsRecord(
                    camera_id=meta.camera_id,
                    seq=meta.seq,
                    capture_ns=meta.capture_ns,
                    frame=ref,
                    model=self.model_ref,
                    width=meta.width,
                    height=meta.height,
                    detections=detections,
                    class_names=self.detector.names_of(detections),
                    timings=timings,
                    media_ns=meta.media_ns,
                    frame_index=meta.frame_index,
                    produced_ns=produced,
                    reused_from=reused_from,
                )
                self.deliveries.send(topic, key=meta.camera_id.encode(), value=out.to_bytes())
            metrics.DETECTED.inc(batch.detected)
            if batch.detected < len(batch.frames):
                metrics.STILL_REUSED.inc(len(batch.frames) - batch.detected)
        self._unsettled.append(Published(batch.next_offsets(), batch.epochs, len(batch.frames), batch.detected))
        self._commit()

    def _commit(self, force: bool = False) -> None:
        """Wait until what was sent is acknowledged, then commit it: at most every `commit_interval_ms` (and at
        a stop). Waiting per batch held the next batch's gathering for a broker round trip each time (15 % of
        the poll thread's time at capacity here) while a lane went without work; a crash redoes at most the
        interval."""
        if not self._unsettled or (
            not force and time.monotonic() - self._committed_at < self.cfg.commit_interval_ms / 1000
        ):
            return
        # Waits out an outage however long, re-sending what expired; only a stop during one gives up.
        if not self.deliveries.settle(self._stop):
            log.warning(
                "stopping while Kafka does not acknowledge: %d batch(es) are not committed and will be redone",
                len(self._unsettled),
            )
            self._unsettled = []
            return
        # Per partition, the next offset to commit and the epoch it was fetched in: the latest batch of the
        # partition's current epoch wins (a batch of an earlier epoch never moves the offset back).
        pending: dict[TopicPartition, tuple[int, int]] = {}
        for done in self._unsettled:
            self.published += done.frames
            self.reused += done.frames - done.detected
            self.batches += 1
            for tp, offset in done.next_offsets.items():
                previous = pending.get(tp)
                if previous is None or previous[1] != done.epochs[tp] or previous[0] < offset:
                    pending[tp] = (offset, done.epochs[tp])
        self._unsettled = []
        self._committed_at = time.monotonic()
        offsets = {
            tp: OffsetAndMetadata(offset, "", -1) for tp, (offset, epoch) in pending.items() if self._current(tp, epoch)
        }
        skipped = len(pending) - len(offsets)
        if skipped:
            # Published but not committed: the partition's next owner redoes these frames from the committed
            # offset; if that is this worker, its next batch of the partition commits past them.
            log.info("not committing %d partition(s) revoked while their batch was in flight", skipped)
        if not offsets:
            return
        try:
            self.consumer.commit(offsets)
        except (CommitFailedError, KafkaError) as exc:
            # The group moved on (rebalance); the frames are published and will be reprocessed by the owner.
            log.warning("offset commit failed (%s); frames of this batch may be processed again", exc)
            return
        self.lag.record(self.consumer, {tp: o.offset for tp, o in offsets.items()})


def _done(batch: Batch) -> bool:
    return batch.inference is None or batch.inference.done()


def _take_fairly(
    records: list[tuple[KafkaRecord, int]], wanted: int
) -> tuple[list[tuple[KafkaRecord, int]], list[tuple[KafkaRecord, int]]]:
    """The first `wanted` records taken round-robin over partitions, each partition's in offset order
    (a busy camera must not starve the others), and the rest."""
    by_partition: dict[tuple[str, int], list[tuple[KafkaRecord, int]]] = {}
    for item in sorted(records, key=lambda item: (item[0].topic, item[0].partition, item[0].offset)):
        by_partition.setdefault((item[0].topic, item[0].partition), []).append(item)
    taken: list[tuple[KafkaRecord, int]] = []
    depth = 0
    while len(taken) < wanted and any(len(queue) > depth for queue in by_partition.values()):
        for queue in by_partition.values():
            if depth < len(queue) and len(taken) < wanted:
                taken.append(queue[depth])
        depth += 1
    chosen = {id(item) for item in taken}
    rest = [item for queue in by_partition.values() for item in queue if id(item) not in chosen]
    taken.sort(key=lambda item: (item[0].topic, item[0].partition, item[0].offset))
    return taken, rest


def _camera_of(record: KafkaRecord) -> str | None:
    """The camera of a refused record, from its key (every vigil topic is keyed by camera id)."""
    return (record.key or b"")[:256].decode("utf-8", "replace") or None


def detections_of(records: Sequence[DetectionsRecord]) -> dict[str, list[DetectionsRecord]]:
    """Group detections records by camera, in arrival order (a helper for tests and tools)."""
    grouped: dict[str, list[DetectionsRecord]] = {}
    for rec in records:
        grouped.setdefault(rec.camera_id, []).append(rec)
    return grouped
