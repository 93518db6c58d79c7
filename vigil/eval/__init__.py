"""Evaluation of recorded footage against ground truth (`vigil eval`, `vigil tune`).

Like `vigil/cli.py`, the wiring modules here (`cli`, `pipeline`, `run`, `tune`) are imported only
by the `eval` and `tune` subcommands, and drive the stages (ingest's replay source, the detector,
the alert engine). The scoring modules (`groundtruth`, `scoring`, `events`, `report`) are pure and
depend on nothing but numpy, pycocotools and matplotlib; tests/core/test_layout.py keeps it so.
"""
