"""Evaluation of recorded footage against ground truth (`vigil eval`, `vigil tune`).

Like `vigil/cli.py`, this package is CLI wiring: it is imported only by the `eval` and `tune`
subcommands, and may drive the stages. The scoring modules (`groundtruth`, `scoring`, `events`)
are pure and depend on nothing but numpy and pycocotools.
"""
