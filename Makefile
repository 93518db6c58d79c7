# vigil — set-up and checks. `make demo` and `make test` do everything on a fresh Debian machine:
# system packages, .venv/, Python dependencies, the Apache Kafka jars (Maven cache), then run.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export YOLO_OFFLINE := 1
# Ultralytics writes settings under the home directory unless told otherwise.
export YOLO_CONFIG_DIR := $(CURDIR)/.state/ultralytics

.PHONY: help system-deps system-deps-test install install-test install-bench lint test demo demo-live broker-start broker-stop bench screenshots clean

help:
	@echo "make demo     set up everything and run the demo on the embedded Kafka broker"
	@echo "make demo-live  the demo, but the stack and the console keep running after the replay (Ctrl-C stops)"
	@echo "make test     set up everything and run ruff, mypy and the test suite"
	@echo "make bench    run the benchmarks under bench/"
	@echo "make screenshots  run the console's browser tests and keep their screenshots in docs/screenshots/"

system-deps:
	@bash deploy/install-system-deps.sh

# The tests also need promtool (Prometheus rules and /metrics) and chromium (the console's browser tests).
system-deps-test:
	@bash deploy/install-system-deps.sh --test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Runtime + dev + eval + web extras (no torch).
$(VENV)/.installed-base: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[dev,eval,web]"
	@touch $@

# ultralytics, trackers and trackeval depend on the GUI opencv-python; both wheels ship cv2/, so the headless
# one is laid back on top after installing any of them.
HEADLESS_CV2 = $(BIN)/pip install -q --force-reinstall --no-deps \
	"opencv-python-headless==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opencv-python-headless"))')"

# The export extra brings ultralytics and the multi-GB torch; only tests and `vigil models export` need it.
# The scorers extra: the reference tracking scorers the tests check vigil's against.
$(VENV)/.installed-test: $(VENV)/.installed-base
	$(BIN)/pip install -q -e ".[dev,eval,web,export,scorers]"
	$(HEADLESS_CV2)
	@touch $@

# The tracking benchmark's peers. norfair 2.3.0 pins numpy<2 yet runs on numpy 2: installed without its pins.
$(VENV)/.installed-bench: $(VENV)/.installed-test
	$(BIN)/pip install -q -e ".[dev,eval,web,export,bench]"
	$(BIN)/pip install -q --no-deps "norfair==2.3.0"
	$(HEADLESS_CV2)
	@touch $@

install: system-deps $(VENV)/.installed-base
	$(BIN)/vigil broker fetch

install-test: system-deps-test $(VENV)/.installed-test
	$(BIN)/vigil broker fetch

install-bench: system-deps-test $(VENV)/.installed-bench
	$(BIN)/vigil broker fetch

lint: $(VENV)/.installed-base
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install-test lint
	$(BIN)/pytest -q

demo: install
	$(BIN)/python examples/demo.py

demo-live: install
	$(BIN)/python examples/demo.py --keep

broker-start: install
	$(BIN)/vigil broker start

broker-stop:
	$(BIN)/vigil broker stop

bench: install-bench
	$(BIN)/python bench/bench_kafka.py
	$(BIN)/python bench/bench_detect.py
	$(BIN)/python bench/bench_ingest.py
	$(BIN)/python bench/bench_alerts.py
	$(BIN)/python bench/bench_web.py
	$(BIN)/python bench/bench_tracking.py
	$(BIN)/python bench/bench_console.py

# The README's pictures of the console: taken by the browser tests against the real stack.
screenshots: install-test
	VIGIL_SCREENSHOT_DIR=docs/screenshots $(BIN)/pytest -q tests/web/test_console.py

clean:
	-$(BIN)/vigil broker stop
	rm -rf .state .pytest_cache .mypy_cache .ruff_cache
