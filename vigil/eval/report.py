"""The evaluation report: report.json, report.md and PNG plots."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vigil.eval.controls import ControlsReport
from vigil.eval.events import EventScores
from vigil.eval.scoring import ClassScores, DetectionScores
from vigil.eval.tracking import TrackingScores


@dataclass
class LatencyStats:
    count: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def of(cls, samples_ms: list[float]) -> LatencyStats:
        if not samples_ms:
            return cls(0, 0.0, 0.0, 0.0, 0.0, [])
        values = np.asarray(samples_ms, np.float64)
        p50, p90, p99 = (float(np.percentile(values, q)) for q in (50, 90, 99))
        return cls(len(values), p50, p90, p99, float(values.max()), [float(v) for v in values])


@dataclass
class EvalReport:
    video: str
    ground_truth: str
    model: str
    frames_expected: int
    frames_scored: int
    threshold: float
    pipeline: DetectionScores
    bare: DetectionScores | None
    events: EventScores | None
    capture_to_detection: LatencyStats
    capture_to_alert: LatencyStats
    pipeline_fps: float
    wall_s: float
    notes: list[str] = field(default_factory=list)
    ground_truth_matching: dict[str, Any] | None = None  # vigil.eval.labels_match.Matching.to_json()
    tracking: TrackingScores | None = None
    controls: ControlsReport | None = None  # object filters and masks; None when the camera has none

    def to_json(self) -> dict[str, Any]:
        def scores(s: DetectionScores | None) -> dict[str, Any] | None:
            if s is None:
                return None
            return {
                "threshold": s.threshold,
                "iou": s.iou,
                "frames": s.frames,
                "overall": _class_json(s.overall),
                "per_class": {name: _class_json(c) for name, c in s.per_class.items()},
            }

        events = _events_json(self.events) if self.events is not None else None
        latency = {
            name: {k: v for k, v in asdict(stats).items() if k != "samples_ms"}
            for name, stats in (
                ("capture_to_detection", self.capture_to_detection),
                ("capture_to_alert", self.capture_to_alert),
            )
        }
        return {
            "video": self.video,
            "ground_truth": self.ground_truth,
            "model": self.model,
            "frames_expected": self.frames_expected,
            "frames_scored": self.frames_scored,
            "ground_truth_matching": self.ground_truth_matching,
            "pipeline": scores(self.pipeline),
            "bare_model": scores(self.bare),
            "ap50_lost_by_pipeline": (self.bare.overall.ap50 - self.pipeline.overall.ap50) if self.bare else None,
            "events": events,
            "tracking": self.tracking.to_json() if self.tracking is not None else None,
            "filters": self.controls.to_json() if self.controls is not None else None,
            "latency_ms": latency,
            "throughput": {"pipeline_fps": self.pipeline_fps, "wall_s": self.wall_s},
            "notes": self.notes,
        }

    def to_markdown(self) -> str:
        p, b = self.pipeline.overall, self.bare.overall if self.bare else None
        lines = [
            f"# vigil evaluation: {Path(self.video).name}",
            "",
            f"Model `{self.model}`, {self.frames_scored}/{self.frames_expected} frames scored, "
            f"threshold {self.threshold}, IoU 0.5. Ground truth: `{self.ground_truth}`.",
            "",
            "| | AP@0.5 | AP@[.5:.95] | precision | recall | F1 |",
            "|---|---|---|---|---|---|",
            _row("pipeline (Kafka + JPEG)", p),
        ]
        if b is not None:
            lines.append(_row("bare model (decoded frames)", b))
            lines += ["", f"AP@0.5 lost by the pipeline: {100 * (b.ap50 - p.ap50):+.2f} points."]
        if len(self.pipeline.per_class) > 1:
            lines += ["", "| class | AP@0.5 | AP@[.5:.95] | P | R | F1 |", "|---|---|---|---|---|---|"]
            lines += [_row(name, c) for name, c in self.pipeline.per_class.items()]
        if self.events is not None:
            lines += _events_markdown(self.events)
        lines += _tracking_lines(self.tracking)
        lines += self.controls.markdown() if self.controls is not None else []
        lines += [
            "",
            "## Latency and throughput",
            "",
            "| | n | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
            _lat("capture → detections record", self.capture_to_detection),
            _lat("capture → alert", self.capture_to_alert),
            "",
            f"Pipeline throughput {self.pipeline_fps:.1f} frames/s over {self.wall_s:.1f} s.",
            "",
            "Plots: `pr_curve.png` (precision-recall per class), `latency.png`, `timeline.png`.",
        ]
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        (out_dir / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        return [out_dir / "report.json", out_dir / "report.md", *self.plot(out_dir)]

    def plot(self, out_dir: Path) -> list[Path]:
        import matplotlib

        matplotlib.use("Agg")  # files only: never needs a display
        import matplotlib.pyplot as plt

        written = []
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for label, scores in (("pipeline", self.pipeline), ("bare model", self.bare)):
            if scores is None:
                continue
            for name, c in scores.per_class.items():
                ax.plot(c.pr_recall, c.pr_precision, label=f"{name} ({label}) AP50={c.ap50:.3f}")
        ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (IoU 0.5)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
        written.append(_save(fig, out_dir / "pr_curve.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        for label, stats in (
            ("capture → detections", self.capture_to_detection),
            ("capture → alert", self.capture_to_alert),
        ):
            if stats.samples_ms:
                ax.hist(stats.samples_ms, bins=30, alpha=0.6, label=f"{label} (p50 {stats.p50_ms:.0f} ms)")
        ax.set(xlabel="latency (ms)", ylabel="records", title="Latency")
        ax.legend(fontsize=8)
        written.append(_save(fig, out_dir / "latency.png"))

        written.append(_save(_timeline(plt, self.events), out_dir / "timeline.png"))
        return written


def _tracking_lines(t: TrackingScores | None) -> list[str]:
    if t is None:
        return []
    return [
        "",
        "## Tracking",
        "",
        f"The aggregator's tracker on the pipeline's detections, against the ground-truth identities "
        f"({t.gt_ids} objects, {t.gt_boxes} boxes in {t.frames} frames; IoU {t.iou} for a hit).",
        "",
        "| MOTA | MOTP | IDF1 | IDP | IDR | HOTA | DetA | AssA | LocA | ID switches | fragmentations | MT / PT / ML |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {t.mota:.3f} | {t.motp:.3f} | {t.idf1:.3f} | {t.idp:.3f} | {t.idr:.3f} | {t.hota:.3f} | {t.deta:.3f} "
        f"| {t.assa:.3f} | {t.loca:.3f} | {t.id_switches} | {t.fragmentations} "
        f"| {t.mostly_tracked} / {t.partially_tracked} / {t.mostly_lost} |",
    ]


FALSE_COLOURS = {"duplicate": "tab:red", "not_due": "tab:orange", "no_ground_truth": "tab:purple"}


def _timeline(plt: Any, events: EventScores | None) -> Any:
    """One row per labelled track with an event: its events as bars (green matched, grey missed,
    labelled with the reason), each alert as a marker on the row of the object it was on."""
    tracks = sorted({e.track_id for e in events.gt_events} | {f.track_id for f in events.false if f.track_id is not None}) if events else []  # fmt: skip
    rows = len(tracks) + (1 if events and any(f.track_id is None for f in events.false) else 0)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * max(rows, 3)))
    if events is not None:
        missed = {m.event: m for m in events.missed}
        matched = dict(events.matched)
        for e in events.gt_events:
            y = tracks.index(e.track_id)
            hit = e in matched
            ax.barh(y, e.end_frame - e.start_frame + 1, left=e.start_frame, height=0.6,
                    color="tab:green" if hit else "0.75", alpha=0.6)  # fmt: skip
            if not hit:
                reason = missed[e].reason if e in missed else "missed"
                ax.text(e.start_frame, y, f" {reason}", va="center", fontsize=7)
        for e, a in events.matched:
            ax.plot(a.start_frame, tracks.index(e.track_id), "v", color="tab:blue", ms=8)
        for f in events.false:
            y = tracks.index(f.track_id) if f.track_id is not None else len(tracks)
            ax.plot(f.alert.start_frame, y, "x", color=FALSE_COLOURS[f.kind], ms=9, mew=2)
        labels = [f"track {t}" for t in tracks] + (["no object"] if rows > len(tracks) else [])
        ax.set_yticks(range(rows), labels)
        handles = [
            plt.Line2D([], [], color="tab:green", lw=6, alpha=0.6, label="event, alerted"),
            plt.Line2D([], [], color="0.75", lw=6, label="event, missed (reason)"),
            plt.Line2D([], [], color="tab:blue", marker="v", ls="", label="alert, matched"),
        ] + [
            plt.Line2D([], [], color=c, marker="x", ls="", mew=2, label=f"false: {k}") for k, c in FALSE_COLOURS.items()
        ]
        ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_ylim(-0.7, rows - 0.3)
    title = "Ground-truth events and alerts"
    if events is not None:
        title += f": recall {events.event_recall:.2f}, alert precision {events.alert_precision:.2f}"
    ax.set(xlabel="frame", title=title)
    return fig


def _events_json(e: EventScores) -> dict[str, Any]:
    return {
        "gt_events": len(e.gt_events),
        "alerts": len(e.alerts),
        "matched": len(e.matched),
        "event_recall": e.event_recall,
        "alert_precision": e.alert_precision,
        "event_f1": e.event_f1,
        "false_alerts": e.false_alerts,
        "duplicate_alerts": e.duplicates,
        "false_alerts_per_hour": e.false_alerts_per_hour,
        "footage_s": e.footage_s,
        "missed_reasons": e.reasons(),
        "gt": [asdict(ev) for ev in e.gt_events],
        "fired": [asdict(a) for a in e.alerts],
        "missed": [{**asdict(m.event), "reason": m.reason, "detail": m.detail} for m in e.missed],
        "false": [
            {
                "alert_id": f.alert.alert_id,
                "start_frame": f.alert.start_frame,
                "kind": f.kind,
                "track_id": f.track_id,
                "detail": f.detail,
            }
            for f in e.false
        ],  # fmt: skip
    }


def _events_markdown(e: EventScores) -> list[str]:
    lines = [
        "",
        "## Alerts",
        "",
        f"{len(e.gt_events)} ground-truth events, {len(e.alerts)} alerts fired, {len(e.matched)} matched: "
        f"**event recall {e.event_recall:.3f}, alert precision {e.alert_precision:.3f}** (event F1 {e.event_f1:.3f}); "
        f"{e.false_alerts} false alerts ({e.duplicates} duplicates of an alerted event, "
        f"{e.false_alerts_per_hour:.1f} per hour of footage).",
    ]
    if e.missed:
        lines += ["", "| missed event (track, frames) | why | detail |", "|---|---|---|"]
        lines += [
            f"| {m.event.track_id}, {m.event.start_frame}-{m.event.end_frame} | {m.reason} | {m.detail} |"
            for m in e.missed
        ]
    if e.false:
        lines += ["", "| false alert | frame | what | detail |", "|---|---|---|---|"]
        lines += [f"| `{f.alert.alert_id}` | {f.alert.start_frame} | {f.kind} | {f.detail} |" for f in e.false]
    return lines


def _class_json(c: ClassScores) -> dict[str, Any]:
    data = asdict(c)
    data.pop("pr_recall")
    data.pop("pr_precision")
    return data


def _row(label: str, c: ClassScores) -> str:
    return f"| {label} | {c.ap50:.3f} | {c.ap50_95:.3f} | {c.precision:.3f} | {c.recall:.3f} | {c.f1:.3f} |"


def _lat(label: str, s: LatencyStats) -> str:
    return f"| {label} | {s.count} | {s.p50_ms:.1f} | {s.p90_ms:.1f} | {s.p99_ms:.1f} | {s.max_ms:.1f} |"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
