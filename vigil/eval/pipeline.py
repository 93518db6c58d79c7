"""`vigil eval`'s pipeline run: recorded footage through the real stages, over Kafka.

replay (child `vigil replay --fast`) -> frames topic -> `vigil detect` (child) -> detections topic
-> this process (collects every record, de-duplicated by frame ref, and relays it cut at the
configured threshold) -> alerting topic -> `vigil alerts` (child) -> alerts topic -> this process.

Why the relay: for AP the detector must keep low-confidence boxes (like COCO evaluation), but the
aggregator must see exactly what a production worker at `detect.conf_threshold` publishes. Greedy
NMS commutes with a score cut (a box above the cut can only be suppressed by a higher-scoring box,
also above it), so cutting the low-threshold output gives the production output box for box.

Every run has its own topics and consumer groups (the config's names + `.eval-<run id>`), so runs
never mix; the embedded broker is started if the config names no cluster and is stopped again only
if this run started it. Children log to files in the output folder.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kafka import TopicPartition
from pydantic import SecretStr

from vigil.broker import EmbeddedBroker
from vigil.config import CameraConfig, RuleConfig, VigilConfig, ZoneConfig
from vigil.contracts import AlertRecord, DeadLetter, DetectionsRecord, FrameMeta
from vigil.errors import ContractError, VigilError
from vigil.kafka import LagProbe, ensure_topics, make_admin, make_consumer, make_producer
from vigil.processes import free_port, signal_group
from vigil.scrape import scrape

log = logging.getLogger(__name__)


class EvalError(VigilError):
    """The evaluation run could not complete (a stage failed, or frames went missing)."""


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class EvalTarget:
    """The camera the footage is replayed as, and the rule (with its zone) that alerts are scored on."""

    camera: CameraConfig
    rule: RuleConfig | None
    zone: ZoneConfig | None


def choose_target(config: VigilConfig, video: str, camera_id: str | None, rule_name: str | None) -> EvalTarget:
    """`--rule` (default: the first rule) picks the rule; the camera is `--camera`, else the rule's
    first camera, else the first camera with the rule's zone, else the first camera, else 'eval'."""
    rule = None
    if config.alerts.rules:
        names = [r.name for r in config.alerts.rules]
        if rule_name is not None and rule_name not in names:
            raise EvalError(f"--rule {rule_name!r} is not in the config's alerts.rules {names}")
        rule = next(r for r in config.alerts.rules if rule_name in (None, r.name))
    elif rule_name is not None:
        raise EvalError(f"--rule {rule_name!r} given but the config has no alerts.rules")
    camera = config.camera(camera_id) if camera_id else None
    if camera_id and camera is None:
        raise EvalError(f"--camera {camera_id!r} is not in the config's cameras {[c.id for c in config.cameras]}")
    if camera is None and rule is not None:
        candidates = [c for c in config.cameras if not rule.cameras or c.id in rule.cameras]
        camera = next((c for c in candidates if rule.zone is None or c.zone(rule.zone)), None)
    if camera is None and config.cameras:
        camera = config.cameras[0]
    data: dict[str, Any] = camera.model_dump() if camera is not None else {"id": camera_id or "eval"}
    data.update(url=SecretStr(str(video)), kind="replay", enabled=True)
    # Every frame must reach detection: motion gating would leave ground-truth frames unscored.
    data["motion"] = dict(data.get("motion") or {}, enabled=False)
    camera = CameraConfig.model_validate(data)
    if rule is not None and rule.cameras and camera.id not in rule.cameras:
        raise EvalError(f"rule {rule.name!r} applies to cameras {rule.cameras}, not to camera {camera.id!r}")
    zone = camera.zone(rule.zone) if rule is not None and rule.zone is not None else None
    if rule is not None and rule.zone is not None and zone is None:
        raise EvalError(f"rule {rule.name!r} needs zone {rule.zone!r}, which camera {camera.id!r} does not define")
    return EvalTarget(camera, rule, zone)


def _reveal(value: Any) -> Any:
    """model_dump() output with secrets in clear text and tuples as lists, for a child's YAML."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_reveal(v) for v in value]
    return value


@dataclass(frozen=True)
class RunConfigs:
    """The run's two configs: `stages` for replay + detect (low threshold), `alerts` for the aggregator
    (reading the relayed, thresholded topic). `threshold` is the configured detect.conf_threshold."""

    run_id: str
    stages: VigilConfig
    alerts: VigilConfig
    threshold: float


def run_configs(
    base: VigilConfig, target: EvalTarget, eval_conf: float, model: str | None, run_id: str | None = None
) -> RunConfigs:
    run_id = run_id or uuid.uuid4().hex[:8]
    suffix = f".eval-{run_id}"
    data = _reveal(base.model_dump())
    for topic in data["topics"].values():
        if isinstance(topic, dict):
            topic["name"] = topic["name"] + suffix
    data["detect"].update(
        group_id=data["detect"]["group_id"] + suffix,
        # A fast replay is a backlog by design: no frame may be skipped as stale.
        max_age_s=86_400.0,
        conf_threshold=eval_conf,
        model=model or data["detect"]["model"],
    )
    data["cameras"] = [_reveal(target.camera.model_dump())]
    # Only the rules that can run on the replayed camera (the others would name missing zones).
    rules = [
        r
        for r in data["alerts"]["rules"]
        if (not r["cameras"] or target.camera.id in r["cameras"])
        and (r["zone"] is None or target.camera.zone(r["zone"]) is not None)
    ]
    for rule in rules:
        rule["cameras"] = [target.camera.id]
    data["alerts"].update(group_id=data["alerts"]["group_id"] + suffix, rules=rules, webhooks=[])
    data["metrics"]["port"] = 0
    stages = VigilConfig.model_validate(data)
    alerting = dict(data["topics"]["detections"], name=data["topics"]["detections"]["name"] + ".alerting")
    alerts = VigilConfig.model_validate({**data, "topics": {**data["topics"], "detections": alerting}})
    return RunConfigs(run_id, stages, alerts, base.detect.conf_threshold)


# ---------------------------------------------------------------------------------------------- children


@dataclass
class Child:
    """A stage run as `python -m vigil ... <command>`, logging to a file, in a session of its own."""

    name: str
    command: list[str]
    config_path: Path
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self, log_level: str = "INFO") -> None:
        argv = [sys.executable, "-m", "vigil", "--log-level", log_level, "--metrics-port", str(self.port)]
        argv += [*self.command, "--config", str(self.config_path)]
        with open(self.log_path, "wb") as out:
            self.process = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )

    def exited(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def failure(self) -> str:
        return f"{self.name} exited with code {self.exited()}; last lines of {self.log_path}:\n{self.log_tail()}"

    def stop(self, timeout_s: float = 15.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        signal_group(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            signal_group(process.pid, signal.SIGKILL)
            process.wait()


# ---------------------------------------------------------------------------------------------- result


@dataclass
class PipelineResult:
    """What the run produced: one detections record per published frame, the alerts, and timings."""

    records: dict[str, DetectionsRecord]  # by frame key
    alerts: list[AlertRecord]
    alert_time_ns: dict[str, int]  # webhook id -> when the aggregator published it (Kafka timestamp)
    relayed_capture_ns: dict[str, int]  # frame key -> capture time the aggregator saw (footage timeline)
    frames_published: int
    started_ns: int
    threshold: float
    logs: dict[str, Path] = field(default_factory=dict)

    def by_frame_index(self) -> dict[int, DetectionsRecord]:
        return {r.frame_index: r for r in self.records.values() if r.frame_index is not None}

    @property
    def wall_s(self) -> float:
        """Replay start to the last detections record produced."""
        last = max((r.produced_ns for r in self.records.values()), default=self.started_ns)
        return max(1e-9, (last - self.started_ns) / 1e9)


# ---------------------------------------------------------------------------------------------- run


Progress = Callable[[int, int | None], None]


class PipelineRun:
    """Start the broker (if embedded), the children, replay, collect and relay until everything is in."""

    def __init__(
        self,
        configs: RunConfigs,
        target: EvalTarget,
        video: Path,
        out_dir: Path,
        sample_fps: float | None = None,
        realtime: bool = False,
        timeout_s: float = 600.0,
        progress: Progress | None = None,
    ) -> None:
        self.configs = configs
        self.target = target
        self.video = video
        self.out_dir = out_dir
        self.sample_fps = sample_fps
        self.realtime = realtime
        self.timeout_s = timeout_s
        self.progress = progress
        self.children: list[Child] = []
        self._broker: EmbeddedBroker | None = None

    def run(self) -> PipelineResult:
        cfg = self.configs.stages
        kafka = cfg.kafka
        logs = self.out_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        if kafka.uses_embedded_broker:
            broker = EmbeddedBroker(kafka.embedded)
            if not broker.status().running:
                self._broker = broker
                print("kafka: starting the embedded broker for this run", file=sys.stderr)
            broker.start()
        with tempfile.TemporaryDirectory(prefix="vigil-eval-") as tmp:
            stages_path, alerts_path = Path(tmp) / "stages.yaml", Path(tmp) / "alerts.yaml"
            for path, config in ((stages_path, cfg), (alerts_path, self.configs.alerts)):
                path.write_text(yaml.safe_dump(_reveal(config.model_dump()), sort_keys=False), encoding="utf-8")
                path.chmod(0o600)  # may hold SASL credentials
            ensure_topics(kafka, [*cfg.topics.all(), self.configs.alerts.topics.detections], cfg.topics)
            try:
                return self._run(stages_path, alerts_path, logs)
            finally:
                for child in reversed(self.children):
                    child.stop()
                if self._broker is not None:
                    self._broker.stop()

    def _run(self, stages_path: Path, alerts_path: Path, logs: Path) -> PipelineResult:
        cfg, alerts_cfg = self.configs.stages, self.configs.alerts
        detect = Child("detect", ["detect"], stages_path, logs / "detect.log")
        aggregator = Child("alerts", ["alerts"], alerts_path, logs / "alerts.log")
        self.children += [detect, aggregator]
        for child in (detect, aggregator):
            child.start()
        self._wait_ready([detect, aggregator], [cfg.detect.group_id, alerts_cfg.alerts.group_id])
        replay_argv = ["replay", str(self.video), "--camera", self.target.camera.id]
        replay_argv.append("--realtime" if self.realtime else "--fast")
        if self.sample_fps:
            replay_argv += ["--fps", str(self.sample_fps)]
        replay = Child("replay", replay_argv, stages_path, logs / "replay.log")
        self.children.append(replay)
        started_ns = time.time_ns()
        replay.start()
        collector = Collector(self.configs, retime=not self.realtime)
        try:
            return self._collect(collector, replay, [detect, aggregator], started_ns, logs)
        finally:
            collector.close()

    def _wait_ready(self, children: list[Child], groups: list[str], timeout_s: float = 120.0) -> None:
        """Until each child answers /readyz and its consumer group is Stable with a member, so the
        measured phase starts with every stage listening (model loaded, partitions assigned)."""
        deadline = time.monotonic() + timeout_s
        admin = make_admin(self.configs.stages.kafka)
        try:
            while True:
                for child in children:
                    if child.exited() is not None:
                        raise EvalError(child.failure())
                ready = all(scrape(f"http://127.0.0.1:{c.port}").ready for c in children)
                if ready:
                    described = admin.describe_groups(groups)
                    if all(
                        described.get(g, {}).get("group_state") == "Stable" and described[g].get("members")
                        for g in groups
                    ):
                        return
                if time.monotonic() > deadline:
                    raise EvalError(
                        f"stages not ready after {timeout_s:.0f}s (consumer groups {groups}); logs in "
                        f"{children[0].log_path.parent}"
                    )
                time.sleep(0.2)
        finally:
            admin.close()

    def _collect(
        self, collector: Collector, replay: Child, stages: list[Child], started_ns: int, logs: Path
    ) -> PipelineResult:
        cfg = self.configs
        deadline = time.monotonic() + self.timeout_s
        published: int | None = None
        probe = LagProbe(cfg.stages.kafka)
        try:
            while True:
                collector.poll(200)
                for child in stages:
                    if child.exited() is not None:
                        raise EvalError(child.failure())
                if published is None and replay.exited() is not None:
                    if replay.exited() != 0:
                        raise EvalError(replay.failure())
                    published = collector.topic_size(cfg.stages.topics.frames.name)
                if self.progress is not None:
                    self.progress(len(collector.records), published)
                if published is not None and len(collector.records) >= published:
                    collector.flush()
                    if probe.lag(cfg.alerts.alerts.group_id, cfg.alerts.topics.detections.name) == 0:
                        collector.read_alerts_to_end()
                        return PipelineResult(
                            collector.records,
                            collector.alerts,
                            collector.alert_time_ns,
                            collector.relayed_capture_ns,
                            published,
                            started_ns,
                            cfg.threshold,
                            {c.name: c.log_path for c in self.children},
                        )
                if time.monotonic() > deadline:
                    raise EvalError(self._missing(collector, published, probe, logs))
        finally:
            probe.close()

    def _missing(self, collector: Collector, published: int | None, probe: LagProbe, logs: Path) -> str:
        cfg = self.configs
        if published is None:
            return f"replay did not finish within {self.timeout_s:.0f}s (see {logs / 'replay.log'})"
        if len(collector.records) < published:
            frames = collector.frame_indices_published(cfg.stages.topics.frames.name)
            have = {r.frame_index for r in collector.records.values()}
            missing = sorted(i for i in frames if i not in have)
            letters = collector.dead_letters(cfg.stages.topics.dead_letter.name)
            why = "; dead letters: " + "; ".join(letters[:5]) if letters else ""
            return (
                f"after {self.timeout_s:.0f}s {len(collector.records)}/{published} frames have a detections record; "
                f"missing frame_index {missing[:20]}{' ...' if len(missing) > 20 else ''}{why} "
                f"(see {logs / 'detect.log'})"
            )
        lag = probe.lag(cfg.alerts.alerts.group_id, cfg.alerts.topics.detections.name)
        return f"the aggregator did not drain within {self.timeout_s:.0f}s (lag {lag}; see {logs / 'alerts.log'})"


class Collector:
    """Reads the detections and alerts topics of the run from the beginning (no group), keeps one
    detections record per frame, and relays each new one, cut at the threshold, to the aggregator."""

    def __init__(self, configs: RunConfigs, retime: bool) -> None:
        self.configs = configs
        self.retime = retime
        self._offset_ns: int | None = None
        self.relayed_capture_ns: dict[str, int] = {}
        kafka = configs.stages.kafka
        self.consumer = make_consumer(kafka, "eval", None, auto_offset_reset="earliest")
        self.producer = make_producer(kafka, "eval-relay")
        self.detections_topic = configs.stages.topics.detections.name
        self.alerts_topic = configs.stages.topics.alerts.name
        self.relay_topic = configs.alerts.topics.detections.name
        parts = []
        for topic in (self.detections_topic, self.alerts_topic):
            parts += [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        self.consumer.assign(parts)
        self.consumer.seek_to_beginning(*parts)
        self.alert_parts = [tp for tp in parts if tp.topic == self.alerts_topic]
        self.records: dict[str, DetectionsRecord] = {}
        self.alerts: list[AlertRecord] = []
        self.alert_time_ns: dict[str, int] = {}  # webhook id -> Kafka timestamp of the alert record
        self.malformed = 0

    def poll(self, timeout_ms: int) -> None:
        for tp, batch in self.consumer.poll(timeout_ms=timeout_ms).items():
            for record in batch:
                if tp.topic == self.detections_topic:
                    self._detections(record.value)
                else:
                    try:
                        alert = AlertRecord.from_bytes(record.value)
                    except ContractError:
                        self.malformed += 1
                        continue
                    self.alerts.append(alert)
                    self.alert_time_ns[alert.webhook_id] = int(record.timestamp) * 1_000_000

    def _detections(self, value: bytes | None) -> None:
        try:
            record = DetectionsRecord.from_bytes(value)
        except ContractError:
            self.malformed += 1
            return
        if record.frame_key in self.records:
            return  # an at-least-once duplicate: the first copy counts
        self.records[record.frame_key] = record
        keep = record.detections.confidence >= self.configs.threshold
        capture_ns = record.capture_ns
        if self.retime and record.media_ns is not None:
            # A fast replay reads frames in bursts, so its capture times are not the footage's: the
            # tracker's motion model and the rules' seconds (dwell, end, lost) would see a distorted
            # clock. The aggregator gets the footage's own timeline instead, as a live camera gives it.
            if self._offset_ns is None:
                self._offset_ns = record.capture_ns - record.media_ns
            capture_ns = self._offset_ns + record.media_ns
        self.relayed_capture_ns[record.frame_key] = capture_ns
        cut = DetectionsRecord(
            camera_id=record.camera_id,
            seq=record.seq,
            capture_ns=capture_ns,
            frame=record.frame,
            model=record.model,
            width=record.width,
            height=record.height,
            detections=record.detections[keep],
            class_names=tuple(n for n, k in zip(record.class_names, keep.tolist(), strict=True) if k),
            timings=record.timings,
            media_ns=record.media_ns,
            frame_index=record.frame_index,
            produced_ns=record.produced_ns,
        )
        # Keyed by camera like the worker, so the aggregator sees one camera's records in order.
        self.producer.send(self.relay_topic, key=record.camera_id.encode(), value=cut.to_bytes())

    def flush(self) -> None:
        self.producer.flush(timeout=30)

    def read_alerts_to_end(self, timeout_s: float = 30.0) -> None:
        ends = self.consumer.end_offsets(self.alert_parts)
        deadline = time.monotonic() + timeout_s
        while any(self.consumer.position(tp) < ends[tp] for tp in self.alert_parts):
            if time.monotonic() > deadline:
                raise EvalError(f"could not read the alerts topic {self.alerts_topic} to its end in {timeout_s:.0f}s")
            self.poll(200)

    def topic_size(self, topic: str) -> int:
        parts = [TopicPartition(topic, p) for p in sorted(self.consumer.partitions_for_topic(topic) or ())]
        return sum(int(v) for v in self.consumer.end_offsets(parts).values())

    def _read_all(self, topic: str) -> list[Any]:
        consumer = make_consumer(self.configs.stages.kafka, "eval-inspect", None)
        try:
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            records: list[Any] = []
            deadline = time.monotonic() + 30
            while any(consumer.position(tp) < ends[tp] for tp in parts) and time.monotonic() < deadline:
                for batch in consumer.poll(timeout_ms=500).values():
                    records.extend(batch)
            return records
        finally:
            consumer.close()

    def frame_indices_published(self, topic: str) -> list[int]:
        indices = []
        for record in self._read_all(topic):
            try:
                index = FrameMeta.from_headers(record.headers).frame_index
            except ContractError:
                continue
            if index is not None:
                indices.append(index)
        return sorted(indices)

    def dead_letters(self, topic: str) -> list[str]:
        reasons = []
        for record in self._read_all(topic):
            try:
                letter = DeadLetter.from_record(record)
            except ContractError:
                continue
            reasons.append(f"{letter.stage}: {letter.reason}")
        return reasons

    def close(self) -> None:
        self.consumer.close()
        self.producer.close(timeout=10)
