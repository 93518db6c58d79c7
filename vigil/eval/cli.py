"""`vigil eval` and `vigil tune` handlers (dispatched lazily from `vigil/cli.py`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vigil.errors import ConfigError, ConfigIssue
from vigil.settings import resolve_config


def _existing(path: str, what: str) -> Path:
    file = Path(path)
    if not file.exists():
        raise ConfigError(what, [ConfigIssue(what, f"{path} does not exist")])
    return file


def eval_main(args: argparse.Namespace) -> int:
    from vigil.eval.alignment import check_alignment
    from vigil.eval.pipeline import PipelineRun, choose_target, run_configs
    from vigil.eval.run import (
        bare_predictions,
        build_report,
        load_ground_truth,
        pipeline_predictions,
        progress_line,
        refusal_report,
        video_fps,
    )

    config = resolve_config(args.config, args.log_level)
    video = _existing(args.video, "--video")
    out = Path(args.out)
    with refusal_report(out):  # before anything runs: labels that find no frames are refused here
        gt = load_ground_truth(
            str(_existing(args.gt, "--gt")), args.gt_format, video, args.gt_offset, config.class_names()
        )
    fps = gt.fps or video_fps(video)
    target = choose_target(config, str(video.resolve()), args.camera, args.rule)
    configs = run_configs(config, target, args.eval_conf, args.model)
    print(
        f"vigil eval: run {configs.run_id}: {video.name} as camera {target.camera.id!r}, model "
        f"{configs.stages.detect.model}, topics *.eval-{configs.run_id}",
        file=sys.stderr,
    )
    started = time.monotonic()
    run = PipelineRun(
        configs, target, video.resolve(), out, args.fps, args.realtime, args.timeout, progress_line("pipeline: scored")
    )
    result = run.run()
    print(f"\n pipeline: {len(result.records)} frames in {result.wall_s:.1f}s", file=sys.stderr)
    bare = None
    model_name = configs.stages.detect.model
    if not args.no_bare:
        indices = {r.frame_index for r in result.records.values() if r.frame_index is not None}
        show = progress_line("bare model: scored")
        bare, model_name = bare_predictions(
            configs.stages, None, args.eval_conf, video, indices, gt, lambda n: show(n, len(indices))
        )
        print(file=sys.stderr)
    with refusal_report(out):  # before scoring: labels shifted in time are refused here
        what = "bare model" if bare is not None else "pipeline"
        predictions = bare if bare is not None else pipeline_predictions(result, gt)
        notes = check_alignment(gt, predictions, configs.stages.class_names(), what)
    print("\n".join(f"labels: {n}" for n in notes), file=sys.stderr)
    report = build_report(
        video, args.gt, gt, fps, model_name, target, result, bare, configs.stages.class_names(), configs.alerts.alerts,
        configs.alerts.objects,
    )  # fmt: skip
    written = report.write(out)
    p = report.pipeline.overall
    print(
        f"{report.frames_scored}/{report.frames_expected} frames scored: AP@0.5 {p.ap50:.3f}, AP@[.5:.95] "
        f"{p.ap50_95:.3f}, P {p.precision:.3f} R {p.recall:.3f} F1 {p.f1:.3f} at {report.threshold}"
        + (f"; bare model AP@0.5 {report.bare.overall.ap50:.3f}" if report.bare else ""),
    )
    if report.events is not None:
        e = report.events
        print(
            f"alerts: event recall {e.event_recall:.3f}, alert precision {e.alert_precision:.3f} "
            f"({len(e.alerts)} fired, {e.false_alerts} false of which {e.duplicates} duplicates, "
            f"{e.false_alerts_per_hour:.1f} false/hour)"
        )
        for miss in e.missed:
            ev = miss.event
            print(
                f"  missed: track {ev.track_id} frames {ev.start_frame}-{ev.end_frame}: {miss.reason} ({miss.detail})"
            )
        for false in e.false:
            print(
                f"  false alert {false.alert.alert_id} at frame {false.alert.start_frame}: {false.kind} ({false.detail})"
            )
    if (c := report.controls) is not None:
        print(f"object filters and masks: {c.boxes_in - c.boxes_kept} of {c.boxes_in} boxes removed before tracking")
        for effect in c.effects:
            boxes = f"{effect.boxes} boxes held back" if effect.control == "threshold" else f"{effect.boxes} boxes"
            print(
                f"  {effect.control}: {boxes} ({effect.on_labelled} on labelled objects), {effect.alerts_removed} "
                f"alerts removed ({effect.false_alerts_removed} false), {effect.events_lost} events lost"
            )
    if (t := report.tracking) is not None:
        print(f"tracking: MOTA {t.mota:.3f}, IDF1 {t.idf1:.3f}, HOTA {t.hota:.3f}, {t.id_switches} ID switches")
    print(f"wrote {', '.join(str(p) for p in written)} in {time.monotonic() - started:.1f}s")
    return 0


def tune_main(args: argparse.Namespace) -> int:
    from vigil.eval.tune import tune_cli

    return tune_cli(args)
