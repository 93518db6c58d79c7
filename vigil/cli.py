"""`vigil` command line. Every subcommand's arguments are declared here; its code is imported
only when that subcommand runs, so `vigil config validate` never loads ONNX Runtime or OpenCV
and the core package imports no stage."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

from vigil import __version__
from vigil.errors import ConfigError, VigilError

Handler = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Handler:
    """'package.module:function' -> a handler that imports the module when called."""

    def run(args: argparse.Namespace) -> int:
        module_name, function_name = target.split(":")
        function: Handler = getattr(importlib.import_module(module_name), function_name)
        return function(args)

    return run


def _config_validate(args: argparse.Namespace) -> int:
    from vigil.config.loader import check_config

    failed = 0
    for path in args.files:
        try:
            checked = check_config(path, os.environ)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed += 1
            continue
        for warning in checked.warnings:
            print(f"{path}: warning: {warning}", file=sys.stderr)
        config = checked.config
        warned = f", {len(checked.warnings)} warnings" if checked.warnings else ""
        print(
            f"{path}: ok ({len(config.cameras)} cameras, {len(config.alerts.rules)} rules, "
            f"{len(config.alerts.webhooks)} webhooks, model {config.detect.model}{warned})"
        )
    return 1 if failed else 0


def _config_schema(args: argparse.Namespace) -> int:
    import json

    from vigil.config import VigilConfig

    print(json.dumps(VigilConfig.model_json_schema(), indent=2))
    return 0


def _config_docs(args: argparse.Namespace) -> int:
    from vigil.config.docs import render_markdown

    print(render_markdown(), end="")
    return 0


def _add_config(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--config", "-c", required=required, default=None if required else os.environ.get("VIGIL_CONFIG"),
        metavar="FILE", help="vigil YAML config" + ("" if required else " (default: $VIGIL_CONFIG, else built-in defaults)"),
    )  # fmt: skip


def _add_gt_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--gt-format", choices=["mot", "coco", "yolo"], help="default: coco for .json, yolo for a folder, else mot"
    )
    parser.add_argument(
        "--gt-offset",
        type=int,
        metavar="N",
        help="move every label N frames later (negative: earlier); when given, a time shift only warns",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vigil", description="Video-surveillance object detection over Kafka.")
    parser.add_argument("--version", action="version", version=f"vigil {__version__}")
    parser.add_argument("--log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /metrics, /healthz, /readyz on this port (default: the first free one from metrics.port)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    # -- config ------------------------------------------------------------------------------------
    config = sub.add_parser("config", help="validate a config file, print the config schema")
    config_sub = config.add_subparsers(dest="action", required=True)
    validate = config_sub.add_parser("validate", help="check config files; every error names its key and line")
    validate.add_argument("files", nargs="+", metavar="FILE")
    validate.set_defaults(handler=_config_validate)
    config_sub.add_parser("schema", help="print the JSON schema of the config").set_defaults(handler=_config_schema)
    config_sub.add_parser("docs", help="print the configuration reference (Markdown)").set_defaults(
        handler=_config_docs
    )

    # -- broker ------------------------------------------------------------------------------------
    broker = sub.add_parser("broker", help="the embedded Apache Kafka broker (KRaft, loopback)")
    broker.add_argument("action", choices=["fetch", "start", "stop", "status"])
    _add_config(broker, required=False)
    broker.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for start/stop")
    broker.add_argument(
        "--nodes", type=int, choices=range(1, 6), metavar="N", help="a local cluster of N nodes (kafka.embedded.nodes)"
    )
    broker.set_defaults(handler=_lazy("vigil.cluster:cli_main"))

    # -- topics ------------------------------------------------------------------------------------
    topics = sub.add_parser("topics", help="create the configured topics if missing")
    _add_config(topics, required=False)
    topics.set_defaults(handler=_lazy("vigil.kafka_cli:topics_main"))

    # -- ingest ------------------------------------------------------------------------------------
    ingest = sub.add_parser("ingest", help="read cameras, sample, encode and publish frames")
    _add_config(ingest)
    ingest.add_argument("--camera", action="append", metavar="ID", help="only these cameras (repeatable)")
    ingest.set_defaults(handler=_lazy("ingest.cli:ingest_main"))

    replay = sub.add_parser(
        "replay", help="publish a recording (video file, or image folder in natural order) as a camera"
    )
    replay.add_argument("file", metavar="FILE")
    replay.add_argument("--camera", required=True, metavar="ID")
    _add_config(replay, required=False)
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--realtime", dest="realtime", action="store_true", default=None, help="pace at true fps")
    pace.add_argument("--fast", dest="realtime", action="store_false", help="as fast as Kafka accepts")
    replay.add_argument("--source-fps", type=float, help="true frame rate if the container lies")
    replay.add_argument("--fps", type=float, help="sampling rate sent to detection (default: every frame)")
    replay.add_argument("--loop", action="store_true")
    replay.add_argument("--start-frame", type=int, default=None)
    replay.add_argument("--end-frame", type=int)
    replay.set_defaults(handler=_lazy("ingest.cli:replay_main"))

    # -- detect ------------------------------------------------------------------------------------
    detect = sub.add_parser("detect", help="run a detection function in the frames topic's consumer group")
    _add_config(detect)
    detect.set_defaults(handler=_lazy("detect.cli:detect_main"))

    predict = sub.add_parser("predict", help="detect objects in image files (same code path as the worker)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.add_argument("--model", help="registry name or .onnx path (default: detect.model of the config)")
    _add_config(predict, required=False)
    predict.add_argument("--json", action="store_true", help="print JSON lines, one per image")
    predict.add_argument("--conf", type=float, help="confidence threshold override")
    predict.add_argument("--iou", type=float, help="NMS IoU threshold override")
    predict.add_argument("--save", metavar="DIR", help="also write each image with its boxes drawn to DIR/<name>.jpg")
    predict.set_defaults(handler=_lazy("detect.cli:predict_main"))

    serve = sub.add_parser("serve", help="on-demand detection over HTTP (bearer token from detect.http.token)")
    _add_config(serve, required=False)
    serve.set_defaults(handler=_lazy("detect.cli:serve_main"))

    # -- models ------------------------------------------------------------------------------------
    models = sub.add_parser("models", help="the model registry: list, verify, export")
    models.add_argument("--models-dir", default=None, help="registry folder (default: detect.models_dir)")
    _add_config(models, required=False)
    models_sub = models.add_subparsers(dest="action", required=True)
    models_sub.add_parser("list", help="registered models").set_defaults(handler=_lazy("models.cli:list_main"))
    verify = models_sub.add_parser("verify", help="check sha256, load each model, run one inference")
    verify.add_argument("names", nargs="*", metavar="NAME")
    verify.set_defaults(handler=_lazy("models.cli:verify_main"))
    export = models_sub.add_parser("export", help="export an ultralytics .pt or model YAML to ONNX + manifest")
    export.add_argument("source", metavar="MODEL", help="e.g. yolo11n.yaml or weights.pt")
    export.add_argument("--name", help="registry name (default: from the source)")
    export.add_argument("--imgsz", type=int, default=640)
    export.add_argument("--opset", type=int, default=None)
    export.add_argument("--licence", default=None, help="licence recorded in the manifest")
    export.set_defaults(handler=_lazy("models.cli:export_main"))

    # -- alerts ------------------------------------------------------------------------------------
    alerts = sub.add_parser("alerts", help="run the alert aggregator and webhook delivery")
    _add_config(alerts, required=False)
    alerts.add_argument("--new-secret", action="store_true", help="print a new whsec_ signing secret and exit")
    alerts.set_defaults(handler=_lazy("alerts.cli:alerts_main"))
    # -- web ---------------------------------------------------------------------------------------
    web = sub.add_parser("web", help="the review service: alert store, snapshots and clips, console, login")
    _add_config(web, required=False)
    web.set_defaults(handler=_lazy("web.cli:web_main"), action=None)
    web_sub = web.add_subparsers(dest="action", required=False, metavar="ACTION")
    rebuild = web_sub.add_parser("rebuild", help="re-read the alerts topic into a fresh store, keeping review state")
    # SUPPRESS: `vigil web --config F rebuild` keeps F (a subparser default would overwrite it).
    rebuild.add_argument("--config", "-c", default=argparse.SUPPRESS, metavar="FILE", help="vigil YAML config")
    web_sub.add_parser("hash-password", help="read a password on stdin, print its hash for web.users")

    # -- the whole stack -----------------------------------------------------------------------------
    up = sub.add_parser("up", help="run the whole stack on this machine (broker, ingest, detect, alerts, web)")
    _add_config(up)
    up.add_argument("--workers", type=int, default=1, help="detection worker processes (default 1)")
    up.add_argument("--exit-when-done", action="store_true", help="stop once recordings ended and all is drained")
    up.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: run until Ctrl-C)")
    up.add_argument("--progress-every", type=float, default=2.0, metavar="S", help="status line interval")
    up.add_argument(
        "--child-log-level", default=None, choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level of the stages (default WARNING; DEBUG with `vigil --log-level DEBUG up`)",
    )  # fmt: skip
    up.set_defaults(handler=_lazy("vigil.up:up_main"))

    # -- eval ----------------------------------------------------------------------------------------
    ev = sub.add_parser("eval", help="replay labelled footage through the pipeline and score it against ground truth")
    ev.add_argument("--video", required=True, metavar="FILE", help="recording (video file or image folder)")
    ev.add_argument("--gt", required=True, metavar="PATH", help="ground truth: MOT gt.txt, COCO JSON or a YOLO folder")
    _add_gt_options(ev)
    ev.add_argument("--fps", type=float, help="sample the recording at this rate (default: every frame)")
    _add_config(ev)
    ev.add_argument("--out", required=True, metavar="DIR", help="folder for report.json, report.md, plots, logs")
    ev.add_argument("--model", help="registry name or .onnx path (default: detect.model of the config)")
    ev.add_argument("--camera", metavar="ID", help="camera to replay as (default: the rule's camera)")
    ev.add_argument("--rule", metavar="NAME", help="alert rule to score (default: the config's first rule)")
    ev.add_argument("--eval-conf", type=float, default=0.01, help="detection threshold for AP (default 0.01)")
    ev.add_argument("--realtime", action="store_true", help="replay at the true frame rate (default: fast)")
    ev.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for every frame (default 600)")
    ev.add_argument("--no-bare", action="store_true", help="skip scoring the bare model")
    ev.set_defaults(handler=_lazy("vigil.eval.cli:eval_main"))

    # -- tune ----------------------------------------------------------------------------------------
    tune = sub.add_parser(
        "tune",
        help="choose detection, tracker and rule settings on labelled clips, checked on clips held out",
        description="Give several clips (--video/--gt repeated, in pairs): each is held out in turn to check "
        "that the settings tuned on the others do not lower its event F1.",
    )
    tune.add_argument("--video", required=True, action="append", metavar="FILE", help="a labelled clip (repeat)")
    tune.add_argument("--gt", required=True, action="append", metavar="PATH", help="its ground truth (repeat)")
    _add_gt_options(tune)
    _add_config(tune)
    tune.add_argument("--model", help="registry name or .onnx path (default: detect.model of the config)")
    tune.add_argument("--objective", choices=["f1", "precision"], default="f1", help="for the detection thresholds")
    tune.add_argument("--target-precision", type=float, default=0.9, help="with --objective precision")
    tune.add_argument("--rule", metavar="NAME", help="rule whose settings are tuned (default: the first)")
    tune.add_argument("--camera", metavar="ID", help="camera whose zones apply (default: the rule's camera)")
    tune.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    tune.set_defaults(handler=_lazy("vigil.eval.cli:tune_main"))

    status = sub.add_parser("status", help="readiness, counters and lag of a running `vigil up`")
    _add_config(status, required=False)
    status.set_defaults(handler=_lazy("vigil.up:status_main"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.log_level:
        from vigil.logs import setup_logging

        setup_logging(args.log_level)
    from vigil.native_logs import NativeLogCapture

    try:
        # FFmpeg's and OpenCV's own lines (written to descriptor 2 by C code) go through logging.
        with NativeLogCapture():
            code: int = args.handler(args)
    except VigilError as exc:
        print(f"vigil {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    raise SystemExit(main())
