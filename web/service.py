"""The review service's parts wired together: store, login, live state, media, followers.

`WebService(config).start()` opens the store (taking its lock, so `vigil web rebuild` cannot swap
the file under a running service), starts the Kafka followers and the housekeeping thread; the
HTTP app (`web.app.create_app`) reads from it. `stop()` ends every thread it started.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Any

import numpy as np

from vigil.config import VigilConfig
from vigil.contracts import FrameRef
from vigil.draw import Polygon, annotate_alert
from vigil.errors import VigilError
from vigil.health import Health
from vigil.heartbeat import Heartbeat
from vigil.kafka import KafkaError, LagProbe, make_producer, transient
from vigil.signals import guarded
from web.auth import Authenticator
from web.events import EventHub
from web.follow import AlertFollower, LiveFollower
from web.live import LiveState, iso
from web.media import (
    BUILD_SECONDS,
    BUILDS,
    FrameReader,
    MediaCache,
    MediaPending,
    alert_record,
    encode_clip,
)
from web.store import AlertStore, StoredAlert

log = logging.getLogger(__name__)
NS = 1_000_000_000


class StoreLocked(VigilError):
    """Another process (a running `vigil web`) holds the store."""


def lock_store(path: Path) -> IO[str]:
    """An exclusive lock beside the store, held for the process's life."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(f"{path}.lock", "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLocked(
            f"the alert store {path} is in use by another `vigil web` (lock {path}.lock); stop it first"
        ) from None
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def alert_json(alert: StoredAlert) -> dict[str, Any]:
    end = alert.ended_ns
    return {
        "id": alert.id,
        "camera": alert.camera,
        "rule": alert.rule,
        "zone": alert.zone,
        "label": alert.label,
        "class_id": alert.class_id,
        "score": round(alert.score, 4),
        "box": list(alert.box),
        "track_id": alert.track_id,
        "started_ns": alert.started_ns,
        "started_at": iso(alert.started_ns),
        "ended_ns": end,
        "ended_at": iso(end),
        "last_seen_ns": alert.last_seen_ns,
        "duration_s": round(((end or alert.last_seen_ns) - alert.started_ns) / NS, 3),
        "state": "active" if end is None else "ended",
        "updates": alert.updates,
        "reviewed": alert.reviewed,
        "verdict": alert.verdict,
        "reviewed_by": alert.reviewed_by,
        "reviewed_at": iso(alert.reviewed_ns),
        "snapshot_url": f"/api/alerts/{alert.id}/snapshot.jpg",
        "clip_url": f"/api/alerts/{alert.id}/clip.mp4",
    }


class WebService:
    def __init__(self, config: VigilConfig, health: Health | None = None) -> None:
        self.config = config
        self.web = config.web
        self.health = health or Health()
        self.stop_event = threading.Event()
        self.hub = EventHub()
        self.store = AlertStore(self.web.store)
        self.auth = Authenticator(self.web, self.store)
        self.live = LiveState(config, self.hub.publish)
        self.reader = FrameReader(config)
        self.cache = MediaCache(self.web.clip_cache_dir, self.web.clip_cache_mb * 1024 * 1024)
        self.lags: dict[str, int | None] = {}
        self._threads: list[threading.Thread] = []
        self._lock_handle: IO[str] | None = None
        self._producer: Any = None
        self._heartbeat: Heartbeat | None = None
        self.failures: list[str] = []
        self.alerts = AlertFollower(config, self.store, self.stop_event, self._alerts_changed, self.health)

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> WebService:
        self._lock_handle = lock_store(Path(self.web.store))
        self.store.open()
        Path(self.web.clip_cache_dir).mkdir(parents=True, exist_ok=True)
        since = time.time_ns() - 86_400 * NS
        for camera, ids in self.store.active_by_camera(since).items():
            for alert_id in ids:
                self.live.set_active(camera, alert_id, True)
        self._producer = make_producer(self.config.kafka, "web-status")
        self._heartbeat = Heartbeat(
            self._producer, self.config.topics.status.name, "web", self.health, totals=self._totals
        )
        self._heartbeat.start()
        live = LiveFollower(self.config, self.live, self.stop_event, self.health)
        for name, target in (("web-alerts", self.alerts.run), ("web-live", live.run), ("web-tick", self._tick)):
            thread = threading.Thread(
                target=guarded(name, target, self.stop_event, self.failures, log), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)
        return self

    def _totals(self) -> dict[str, float]:
        return {"alerts_stored": float(self.alerts.stored), "frames": float(self.live.frames_seen),
                "sse_clients": float(self.hub.count)}  # fmt: skip

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self._threads:
            thread.join(timeout=15)
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)  # flushes first
            except KafkaError as exc:  # stopping during an outage: the last heartbeats are not worth more
                log.warning("web: last status records not sent (%s)", exc)
            self._producer = None
        self.reader.close()
        self.store.close()
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def _tick(self) -> None:
        probe = LagProbe(self.config.kafka)
        next_lag = 0.0
        try:
            while not self.stop_event.wait(1.0):
                self.live.tick()
                if time.monotonic() >= next_lag:
                    next_lag = time.monotonic() + 5.0
                    try:
                        self.lags = self._lags(probe)
                    except (KafkaError, VigilError) as exc:
                        if not transient(exc):
                            raise
                        # Kafka away: lags are unknown until it answers (the followers say so in /readyz).
                        self.lags = dict.fromkeys(self.lags)
                        probe.close()
        finally:
            probe.close()

    def _lags(self, probe: LagProbe) -> dict[str, int | None]:
        topics, alerts = self.config.topics, self.config.alerts
        pairs = [
            (self.config.detect.group_id, topics.frames.name),
            (alerts.group_id, topics.detections.name),
            *[(f"{alerts.group_id}.webhook.{h.name}", topics.alerts.name) for h in alerts.webhooks],
            (self.web.group_id, topics.alerts.name),
        ]
        return {group: probe.lag(group, topic) for group, topic in pairs}

    def _alerts_changed(self, ids: list[str]) -> None:
        for alert in self.store.get_many(ids):
            self.live.set_active(alert.camera, alert.id, alert.active)
            self.hub.publish("alert", alert_json(alert), alert.camera)

    def alert_reviewed(self, ids: list[str]) -> None:
        for alert in self.store.get_many(ids):
            self.hub.publish("alert", alert_json(alert), alert.camera)

    # ------------------------------------------------------------------------------------ media

    def _zone(self, alert: StoredAlert, width: int, height: int) -> Polygon | None:
        camera = self.config.camera(alert.camera)
        zone = camera.zone(alert.zone) if camera is not None and alert.zone else None
        if zone is None:
            return None
        scale = np.array([width, height] if zone.units == "fraction" else [1, 1], np.float64)
        return Polygon(zone.name, np.asarray(zone.polygon, np.float64) * scale)

    def snapshot(self, alert: StoredAlert) -> Path:
        key = f"snapshot:{alert.id}:{alert.frame_topic}:{alert.frame_partition}:{alert.frame_offset}:{alert.box}"
        path = self.cache.path(key, ".jpg")
        if self.cache.hit(path):
            return path
        with self.cache.building(key):
            if self.cache.hit(path):
                return path
            try:
                ref = FrameRef(alert.frame_topic, alert.frame_partition, alert.frame_offset)
                meta, jpeg = self.reader.frame(ref, f"alert {alert.id}")
                zone = self._zone(alert, meta.width, meta.height)
                data = annotate_alert(jpeg, alert_record(alert), zone, max_pixels=self.web.max_pixels)
            except VigilError:
                BUILDS.labels("snapshot", "failed").inc()
                raise
            self._write(path, data)
            BUILDS.labels("snapshot", "built").inc()
        return path

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self.cache.evict(keep=path)

    def clip_window(self, alert: StoredAlert, now_ns: int) -> tuple[int, int]:
        start = alert.started_ns - int(self.web.clip_pre_s * NS)
        if alert.ended_ns is None:
            end = now_ns
        else:
            end = alert.ended_ns + int(self.web.clip_post_s * NS)
            if end > now_ns:
                wait = (end - now_ns) / NS
                raise MediaPending("clip is still being recorded", round(wait + 0.5, 1))
        return start, min(end, start + int(self.web.clip_max_s * NS))

    def clip(self, alert: StoredAlert, now_ns: int | None = None) -> tuple[Path, bool]:
        """(file, temporary): an ended alert's clip is cached; an active one's is built to now."""
        now_ns = time.time_ns() if now_ns is None else now_ns
        key = f"clip:{alert.id}:{alert.started_ns}:{alert.ended_ns}"
        cached = alert.ended_ns is not None
        path = self.cache.path(key, ".mp4") if cached else self.cache.folder / f".live-{uuid.uuid4().hex}.mp4"
        if cached and self.cache.hit(path):
            BUILDS.labels("clip", "cached").inc()
            return path, False
        what = f"alert {alert.id}"
        # 410 (aged out, topic gone) before 202 (post-roll still to come): waiting would not help.
        self.reader.retained(FrameRef(alert.frame_topic, alert.frame_partition, alert.frame_offset), what)
        start, end = self.clip_window(alert, now_ns)
        with self.cache.building(key):
            if cached and self.cache.hit(path):
                BUILDS.labels("clip", "cached").inc()
                return path, False
            self._build_clip(alert, start, end, path)
        return path, not cached

    def _build_clip(self, alert: StoredAlert, start: int, end: int, path: Path) -> None:
        what = f"alert {alert.id}"
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.mp4")
        camera = self.config.camera(alert.camera)
        # The camera's frames are keyed by camera: they share the partition of the alert's own frame.
        frames = self.reader.frames(alert.camera, start, end, what, alert.frame_topic, alert.frame_partition)
        try:
            stats = encode_clip(tmp, frames, self.web.max_pixels, camera.fps if camera else 5.0)
        except VigilError:
            tmp.unlink(missing_ok=True)
            BUILDS.labels("clip", "failed").inc()
            raise
        finally:
            frames.close()  # hands its consumer back now, not when the generator is collected
        os.replace(tmp, path)
        BUILDS.labels("clip", "built").inc()
        BUILD_SECONDS.observe(stats.seconds)
        log.info("clip %s: %d frames, %.0f KiB in %.2fs", alert.id, stats.frames, stats.bytes / 1024, stats.seconds)
        self.cache.evict(keep=path)

    def webhooks(self, processes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Delivery per endpoint from the heartbeats of the alerts processes that are not gone (a
        stopped one's `webhook:<name>` part says "stopped" for ever) and the endpoint group's lag."""
        alerts = [p for p in processes if p["stage"] == "alerts"]
        live = [p for p in alerts if not p["gone"]]
        found = []
        for hook in self.config.alerts.webhooks:
            part = f"webhook:{hook.name}"
            lag = self.lags.get(f"{self.config.alerts.group_id}.webhook.{hook.name}")
            beats = [(p, c) for p in live for c in p["components"] if c["name"] == part]
            delivered = sum(p["stats"].get(f"delivered.{hook.name}", 0.0) for p, _ in beats)
            per_s = sum(p["stats"].get(f"delivered.{hook.name}_per_s", 0.0) for p, _ in beats)
            if not beats:
                state = "unknown"
                if live:
                    detail = (
                        f"{', '.join(p['process'] for p in live)} does not deliver to {hook.name} (another config?)"
                    )
                elif alerts:
                    detail = f"no heartbeat from an alerts process for {min(p['age_s'] for p in alerts):.0f} s"
                else:
                    detail = "no heartbeat from an alerts process yet"
            elif failing := [c for _, c in beats if not c["ok"]]:
                state, detail = "failing", failing[0]["detail"]
            else:
                # Records behind while nothing was delivered since the last beat: it is retrying.
                state = "retrying" if lag and per_s == 0 else "ok"
                detail = beats[0][1]["detail"]
            found.append({"name": hook.name, "state": state, "lag": lag, "detail": detail,
                          "delivered": int(delivered), "delivered_per_s": round(per_s, 2),
                          "processes": [p["process"] for p, _ in beats]})  # fmt: skip
        return found

    def system(self) -> dict[str, Any]:
        processes = self.live.processes()
        cameras = [{k: c[k] for k in ("id", "state", "fps", "last_frame_age_s")} for c in self.live.cameras()]
        return {
            "processes": processes,
            "cameras": cameras,
            "detect": self.live.detect_figures(),
            "lag": dict(self.lags),
            "dead_letters": self.live.dead_letters(),
            "webhooks": self.webhooks(processes),
            "store": {"alerts": self.store.count(), "path": self.web.store},
        }
