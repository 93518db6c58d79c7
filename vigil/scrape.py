"""Read another vigil process's `/metrics` and `/readyz`: what `vigil up` shows as progress and
`vigil status` prints at a glance."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from vigil.health import ComponentStatus


@dataclass
class Sample:
    """One scrape of one process: metric totals, totals by camera, and readiness (every part's
    status with its words, as /readyz reports them)."""

    ok: bool
    totals: dict[str, float] = field(default_factory=dict)
    by_camera: dict[str, dict[str, float]] = field(default_factory=dict)
    ready: bool = False
    not_ready: list[str] = field(default_factory=list)
    components: list[ComponentStatus] = field(default_factory=list)
    error: str = ""

    def get(self, name: str) -> float:
        return self.totals.get(name, 0.0)


def scrape(base_url: str, timeout_s: float = 2.0) -> Sample:
    """Fetch `/metrics` and `/readyz` of the process serving at `base_url`."""
    try:
        with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout_s) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        return Sample(ok=False, error=str(getattr(exc, "reason", exc)))
    sample = Sample(ok=True)
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            name = metric.name
            if name.endswith("_created"):
                continue
            sample.totals[name] = sample.totals.get(name, 0.0) + metric.value
            camera = metric.labels.get("camera")
            if camera:
                per = sample.by_camera.setdefault(camera, {})
                per[name] = per.get(name, 0.0) + metric.value
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=timeout_s) as response:
            report: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # 503 carries the same JSON, naming what is not ready
        report = json.loads(exc.read() or b"{}")
    except (urllib.error.URLError, OSError, TimeoutError, json.JSONDecodeError):
        report = {}
    sample.ready = bool(report.get("ready"))
    components: dict[str, dict[str, Any]] = report.get("components", {})
    sample.not_ready = [f"{name}: {c.get('detail', '')}" for name, c in sorted(components.items()) if not c.get("ok")]
    sample.components = [
        ComponentStatus(str(name), bool(c.get("ok")), str(c.get("detail", "")), float(c.get("since") or 0.0))
        for name, c in sorted(components.items())
        if isinstance(c, dict)
    ]
    return sample
