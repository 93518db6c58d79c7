"""What `vigil up` and `vigil status` print: the start block (where things go), the progress line,
each stage's readiness when it changes, and the per-process report of `vigil status`.

The words of a camera and of a stage are the processes' own, read from their /readyz (ingest
writes `vigil.health.camera_detail` there), so the progress line, `vigil status` and /readyz say
the same thing in the same words.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vigil.config import VigilConfig
from vigil.health import ComponentStatus, short_words
from vigil.redact import redact_endpoint, redact_url
from vigil.scrape import Sample

CAMERA = "camera:"
DETECTED = "vigil_detect_detected_frames_total"


# ---------------------------------------------------------------------------------------------- start block


def _console_url(config: VigilConfig) -> str | None:
    """The review console's URL when the config has an enabled `web` section (from the web stage)."""
    web = getattr(config, "web", None)
    if web is None or not getattr(web, "enabled", True):
        return None
    public = getattr(web, "public_url", None)
    if public:
        return str(public).rstrip("/")
    host = str(getattr(web, "host", "127.0.0.1"))
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{host if ':' not in host else f'[{host}]'}:{getattr(web, 'port', 8080)}"


def startup_block(config: VigilConfig, metrics: Mapping[str, int]) -> str:
    """Where things go, in a few lines: broker, topics, cameras, model, rules, webhooks, console,
    and each process's metrics port. Webhook endpoints show scheme://host[:port] only."""
    kafka, topics, detect, alerts = config.kafka, config.topics, config.detect, config.alerts
    broker = ", ".join(kafka.bootstrap())
    broker += " (embedded broker, state in " + kafka.embedded.state_dir + ")" if kafka.uses_embedded_broker else ""
    lines = [
        f"broker    {broker}",
        f"topics    {topics.frames.name} ({topics.frames.partitions} partitions) -> {topics.detections.name} -> "
        f"{topics.alerts.name}; dead letters {topics.dead_letter.name}; status {topics.status.name}",
    ]
    cameras = [c for c in config.cameras if c.enabled]
    if cameras:
        described = [
            f"{c.id} ({redact_url(c.url.get_secret_value())}, {c.fps:g} fps{', motion-gated' if c.motion.enabled else ''})"
            for c in cameras
        ]
        lines.append("cameras   " + "; ".join(described))
    else:
        lines.append("cameras   none enabled: nothing is ingested (add one under cameras:)")
    providers = ", ".join(detect.providers)
    lines.append(
        f"model     {detect.model}, execution provider {providers} "
        "(each worker names the one it chose when it is ready)"
    )
    if alerts.rules:
        rules = []
        for rule in alerts.rules:
            where = f" in {rule.zone}" if rule.zone else ""
            on = ",".join(rule.cameras) if rule.cameras else "every camera"
            rules.append(f"{rule.name} ({'/'.join(rule.classes)}{where}, {on})")
        lines.append("rules     " + "; ".join(rules))
    else:
        lines.append("rules     none: no alert can fire (add alerts.rules)")
    if alerts.webhooks:
        hooks = "; ".join(f"{h.name} -> {redact_endpoint(h.url.get_secret_value())}" for h in alerts.webhooks)
        lines.append(f"webhooks  {hooks}")
    else:
        lines.append(f"webhooks  none: alerts only go to the alerts topic {topics.alerts.name}")
    console = _console_url(config)
    if console:
        lines.append(f"console   {console}")
    if metrics:
        ports = ", ".join(f"{name} :{port}" for name, port in metrics.items())
        lines.append(f"metrics   {ports} (/metrics, /readyz; `vigil status` reads them)")
    return "\n".join(f"  {line}" for line in lines)


# ---------------------------------------------------------------------------------------------- words


def camera_parts(sample: Sample | None) -> list[ComponentStatus]:
    if sample is None or not sample.ok:
        return []
    return [c for c in sample.components if c.name.startswith(CAMERA)]


def stage_words(sample: Sample, cameras: bool = True) -> str:
    """'ready', 'not ready: model loading yolox_nano', or 'not answering (...)'. With `cameras`
    false, camera parts do not count (the progress line shows them on their own)."""
    if not sample.ok:
        return f"not answering ({sample.error})"
    parts = [c for c in sample.components if cameras or not c.name.startswith(CAMERA)]
    if not parts:
        return "starting"
    waiting = [c for c in parts if not c.ok]
    if not waiting:
        return "ready"
    return "not ready: " + "; ".join(f"{c.name}: {short_words(c.detail)}" if c.detail else c.name for c in waiting)


def ready_words(sample: Sample) -> str:
    """What a ready process says about its parts: 'model yolox_nano on CPUExecutionProvider; ...'."""
    parts = [c for c in sample.components if not c.name.startswith(CAMERA)]
    return "; ".join(f"{c.name}: {c.detail}" if c.detail else c.name for c in parts)


# ---------------------------------------------------------------------------------------------- progress


@dataclass
class Progress:
    """Rates between two scrapes, rendered as one status line; readiness changes as lines of their own."""

    has_rules: bool = True
    last: dict[str, Sample] = field(default_factory=dict)
    last_t: float = 0.0
    announced: dict[str, str] = field(default_factory=dict)
    answered: set[str] = field(default_factory=set)  # processes that answered a scrape at least once

    def words(self, name: str, sample: Sample, cameras: bool = True) -> str:
        """`stage_words`, except that a process that never answered yet is 'starting'."""
        if sample.ok:
            self.answered.add(name)
        elif name not in self.answered:
            return "starting"
        return stage_words(sample, cameras)

    def _rate(self, name: str, samples: Mapping[str, Sample], metric: str, dt: float) -> float:
        if not dt or name not in self.last or not self.last[name].ok:
            return 0.0
        return max(0.0, (samples[name].get(metric) - self.last[name].get(metric)) / dt)

    def changes(self, samples: Mapping[str, Sample]) -> list[str]:
        """One line per process whose readiness (camera parts aside) changed since the last call."""
        lines = []
        for name, sample in samples.items():
            if not sample.ok:
                continue  # a process that is not answering shows on the progress line
            words = stage_words(sample, cameras=False)
            if words == "starting" or self.announced.get(name) == words:
                continue
            self.announced[name] = words
            lines.append(f"{name} ready: {ready_words(sample)}" if words == "ready" else f"{name} {words}")
        return lines

    def line(
        self,
        samples: Mapping[str, Sample],
        lags: Mapping[str, int | None],
        down: Sequence[str] = (),
        ingest_finished: bool = False,
    ) -> str:
        now = time.monotonic()
        dt = max(1e-3, now - self.last_t) if self.last_t else 0.0
        parts = []
        ingest = samples.get("ingest")
        cameras = camera_parts(ingest)
        if ingest_finished:
            parts.append("cameras: recordings ended")
        elif cameras:
            parts.append(", ".join(f"{c.name[len(CAMERA) :]} {short_words(c.detail)}" for c in cameras))
        elif ingest is not None:
            words = self.words("ingest", ingest, cameras=False)
            parts.append(f"cameras: {'starting' if words == 'ready' else 'ingest ' + words}")
        detect = [n for n in samples if n.startswith("detect-")]
        fps = 0.0
        if detect:
            answering = [n for n in detect if samples[n].ok]
            fps = sum(self._rate(n, samples, DETECTED, dt) for n in answering)
            frames = sum(samples[n].get(DETECTED) for n in answering)
            count = sum(samples[n].get("vigil_detect_inference_seconds_count") for n in answering)
            total = sum(samples[n].get("vigil_detect_inference_seconds_sum") for n in answering)
            infer = f", infer {1000 * total / count:.0f} ms/batch" if count else ""
            dead = sum(samples[n].get("vigil_detect_dead_letter_total") for n in answering)
            dead_words = f", {dead:.0f} dead-lettered" if dead else ""
            states = {n: self.words(n, samples[n]) for n in detect}
            waiting = "".join(f"; {n} {words}" for n, words in states.items() if words != "ready")
            parts.append(f"detect: {frames:.0f} frames, {fps:.1f}/s{infer}{dead_words}{waiting}")
        alerts = samples.get("alerts")
        fired = 0.0
        if alerts is not None:
            if alerts.ok:
                fired = alerts.get("vigil_alerts_fired_total") or alerts.get("vigil_alerts_fired")
                delivered = alerts.get("vigil_alerts_webhook_delivered_total") or alerts.get(
                    "vigil_alerts_webhook_delivered"
                )
                words = self.words("alerts", alerts)
                state = "" if words == "ready" else f"; {words}"
                parts.append(f"alerts: {fired:.0f} fired, {delivered:.0f} delivered{state}")
            else:
                parts.append(f"alerts {self.words('alerts', alerts)}")
        parts.append("lag " + ", ".join(f"{k} {'-' if v is None else v}" for k, v in lags.items()))
        if down:
            parts.append(f"restarting: {', '.join(down)}")
        why = self.why_idle(cameras, ingest is not None or ingest_finished, ingest_finished, fps, fired, lags, samples)
        if why:
            parts.append(why)
        self.last, self.last_t = dict(samples), now
        return " | ".join(parts)

    def why_idle(
        self,
        cameras: Sequence[ComponentStatus],
        has_ingest: bool,
        ingest_finished: bool,
        fps: float,
        fired: float,
        lags: Mapping[str, int | None],
        samples: Mapping[str, Sample],
    ) -> str:
        """When nothing flows, why: the first of these that holds."""
        streaming = any(short_words(c.detail).startswith("streaming") for c in cameras)
        frames_lag = lags.get("frames")
        if fps == 0:
            if not has_ingest:
                return "idle: no camera enabled"
            if ingest_finished and not frames_lag:
                return "idle: recordings ended, lag 0"
            if not streaming and not ingest_finished:
                return "idle: no camera streaming"
            if frames_lag == 0:
                return "idle: lag 0, waiting for new frames"
            if frames_lag and any(not samples[n].ready for n in samples if n.startswith("detect-")):
                return "idle: detect not ready"
            return ""
        if not fired:
            return "no rule matched yet" if self.has_rules else "no alert rules configured"
        return ""


# ---------------------------------------------------------------------------------------------- status


def status_report(name: str, pid: object, url: str, sample: Sample) -> list[str]:
    """`vigil status`'s lines for one process: readiness, each part in /readyz's words, counters."""
    lines = [f"{name:>10}  pid {pid}  {url}  {stage_words(sample)}"]
    for part in sample.components:
        lines.append(f"{'':>12}{'ok' if part.ok else '--'}  {part.name}: {part.detail}")
    for metric, value in sorted(sample.totals.items()):
        if metric.startswith("vigil_") and metric.endswith("_total") and value:
            lines.append(f"{'':>12}{metric} {value:.0f}")
    return lines
