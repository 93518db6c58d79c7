"""Console benchmark, in Debian's chromium driven by Playwright:

* bytes each page loads (HTML + JS + CSS), against the 300 KB budget;
* time to first frame on the live page with 8 cameras (the two shared clips replayed 4 times each
  through `vigil up`: ingest, detect, alerts, web), every tile painted, against a baseline in the
  same browser: a bare page showing one `latest.jpg`;
* frames-on-screen latency (capture time to the paint that shows the frame, measured in the page)
  p50/p99, against the capture-to-event part of it (what the page itself adds is the difference);
* time to the first review cards with 10,000 stored alerts, against a bare `fetch` of the same
  first page of `/api/alerts` from the same page.

    VIGIL_TEST_BOOTSTRAP=127.0.0.1:19092 .venv/bin/python bench/bench_console.py [--cameras 8] [--fps 2]

Without VIGIL_TEST_BOOTSTRAP it starts the embedded broker for the run. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _broker import broker_for_bench
from bench_web import pct, publish_alerts
from playwright.sync_api import sync_playwright

from vigil.config.loader import load_config
from vigil.kafka import ensure_topics
from vigil.passwords import hash_password
from vigil.processes import free_port

REPO = Path(__file__).resolve().parents[1]
CLIPS = ("TUD-Campus", "TUD-Stadtmitte")
PASSWORD = "bench-console-password"
TOKEN = "bench-console-token-" + "y" * 24
BUDGET = 300 * 1024
PAGES = ("/login", "/", "/cameras/cam0", "/review", "/zones/cam0", "/system")


def write_config(folder: Path, bootstrap: str, stem: str, port: int, cameras: int, fps: float) -> Path:
    footage = REPO.parent / "shared" / "data" / "footage"
    entries = "".join(
        f"""
  - id: cam{n}
    kind: replay
    url: {footage / CLIPS[n % 2] / f"{CLIPS[n % 2]}.mp4"}
    fps: {fps}
    replay: {{realtime: true, loop: true, source_fps: 25}}
    zones: [{{name: lower, units: fraction, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}}]"""
        for n in range(cameras)
    )
    path = folder / "console.yaml"
    path.write_text(
        f"""
kafka: {{bootstrap_servers: ["{bootstrap}"]}}
topics:
  frames: {{name: {stem}.frames, partitions: 4, retention_ms: 3600000}}
  detections: {{name: {stem}.detections, partitions: 4}}
  alerts: {{name: {stem}.alerts, partitions: 2}}
  dead_letter: {{name: {stem}.dead-letter, partitions: 1}}
  status: {{name: {stem}.status, partitions: 1}}
cameras:{entries if cameras else " []"}
detect: {{model: yolox_nano, models_dir: {REPO / "models"}, batch_size: 4, group_id: {stem}-detect}}
alerts:
  group_id: {stem}-alerts
  rules: [{{name: in-lower, zone: lower, classes: [person], min_frames: 2, end_after_s: 1}}]
web:
  port: {port}
  group_id: {stem}-web
  store: {folder / "store.sqlite3"}
  clip_cache_dir: {folder / "media"}
  users: [{{name: bench, role: admin, password_hash: "{hash_password(PASSWORD)}"}}]
  tokens: [{{name: bench, role: admin, token: "{TOKEN}"}}]
metrics: {{port: 0}}
"""
    )
    return path


def wait(check: Any, timeout_s: float, what: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the stack exited while waiting for {what}")
        try:
            if check():
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not reached within {timeout_s} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def context(browser: Any, base: str) -> Any:
    ctx = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900})
    answer = ctx.request.post("/api/login", data={"username": "bench", "password": PASSWORD})
    assert answer.status == 200, answer.text()
    return ctx


ALL_TILES = """n => {
  const shown = document.querySelectorAll('[data-camera-id] .frame[data-seq]').length;
  return shown >= n ? performance.now() : false;
}"""

BARE_FRAME = """url => new Promise((done, fail) => {
  const t = performance.now(), img = new Image();
  img.onload = () => requestAnimationFrame(() => done(performance.now() - t));
  img.onerror = fail;
  img.src = url;
  document.body.append(img);
})"""


def live_figures(browser: Any, base: str, cameras: int, runs: int, watch_s: float) -> dict[str, float]:
    ctx = context(browser, base)
    firsts, bares = [], []
    for _ in range(runs):
        page = ctx.new_page()
        page.goto("/static/css/console.css")  # same origin, no camera data: the baseline's blank page
        bares.append(page.evaluate(BARE_FRAME, "/api/cameras/cam0/latest.jpg"))
        page.goto("/", wait_until="commit")
        firsts.append(page.wait_for_function(ALL_TILES, arg=cameras, polling="raf", timeout=30_000).json_value())
        page.close()
    page = ctx.new_page()
    page.goto("/")
    page.wait_for_function(ALL_TILES, arg=cameras, polling="raf", timeout=30_000)
    page.wait_for_timeout(watch_s * 1000)
    stats = page.evaluate("({latency: vigilStats.latencyMs, event: vigilStats.eventMs})")
    boxes = page.evaluate(
        "[...document.querySelectorAll('[data-camera-id] .frame')].map(f => Number(f.dataset.boxes || 0))"
    )
    ctx.close()
    first, bare = statistics.median(firsts), statistics.median(bares)
    paint, event = stats["latency"], stats["event"]
    print(
        f"live, {cameras} cameras: every tile painted {first:7.0f} ms after navigation (median of {runs}; "
        f"runs {', '.join(f'{v:.0f}' for v in firsts)})  vs one bare latest.jpg {bare:5.0f} ms  ratio {first / bare:.2f}"
    )
    print(f"frames on screen: {len(paint)} in {watch_s:.0f} s; capture -> paint p50 {pct(paint, 0.5):6.0f} ms "
          f"p99 {pct(paint, 0.99):6.0f} ms  vs capture -> event p50 {pct(event, 0.5):6.0f} ms "
          f"ratio {pct(paint, 0.5) / max(1.0, pct(event, 0.5)):.3f}; boxes on the tiles at the end {boxes}")  # fmt: skip
    return {"live_first_frame_ms": round(first, 1), "live_bare_frame_ms": round(bare, 1),
            "live_first_frame_ratio": round(first / bare, 3), "latency_p50_ms": round(pct(paint, 0.5), 1),
            "latency_p99_ms": round(pct(paint, 0.99), 1), "event_p50_ms": round(pct(event, 0.5), 1),
            "frames_painted": len(paint)}  # fmt: skip


def page_bytes(browser: Any, base: str) -> dict[str, int]:
    ctx = context(browser, base)
    sizes = {}
    for path in PAGES:
        page = ctx.new_page()
        loaded: dict[str, int] = {}
        page.on("response", lambda r, loaded=loaded: r.request.resource_type in ("document", "script", "stylesheet")
                and loaded.__setitem__(r.url, len(r.body())))  # fmt: skip
        page.goto(path)
        page.wait_for_timeout(1500)
        sizes[path] = sum(loaded.values())
        page.close()
    ctx.close()
    worst = max(sizes.values())
    print("bytes per page (HTML + JS + CSS, uncompressed): " + ", ".join(f"{p} {b / 1024:.1f} KiB" for p, b in sizes.items())
          + f"; largest {worst / 1024:.1f} KiB = {worst / BUDGET:.3f} of the 300 KB budget")  # fmt: skip
    return sizes


FIRST_CARD = "() => document.querySelector('[data-alert-id]') ? performance.now() : false"
BARE_LIST = """async () => { const t = performance.now(); const r = await fetch('/api/alerts?limit=48');
  await r.json(); return performance.now() - t; }"""


def review_figures(browser: Any, args: argparse.Namespace, bootstrap: str) -> dict[str, float]:
    folder = Path(tempfile.mkdtemp(prefix="vigil-bench-console-review-"))
    port = free_port()
    config_path = write_config(folder, bootstrap, f"bench-review-{uuid.uuid4().hex[:8]}", port, 0, 1)
    config = load_config(config_path, os.environ)
    ensure_topics(config.kafka, config.topics)
    publish_alerts(config, args.alerts)
    web = subprocess.Popen([sys.executable, "-m", "vigil", "web", "--config", str(config_path)], cwd=folder)
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:
        wait(
            lambda: client.get("/api/system").json()["store"]["alerts"] >= args.alerts, 300, "10,000 alerts stored", web
        )
        ctx = context(browser, base)
        # The synthetic alerts point at frames that were never published: their thumbnails stay
        # unloaded, so the figure is the cards themselves (a real store's thumbnails load lazily after).
        ctx.route("**/snapshot.jpg", lambda route: route.abort())
        firsts, bares = [], []
        for _ in range(args.runs):
            page = ctx.new_page()
            page.goto("/review", wait_until="commit")
            firsts.append(page.wait_for_function(FIRST_CARD, polling="raf", timeout=30_000).json_value())
            bares.append(page.evaluate(BARE_LIST))
            page.close()
        ctx.close()
    finally:
        client.close()
        stop(web)
    first, bare = statistics.median(firsts), statistics.median(bares)
    print(f"review, {args.alerts} alerts: first cards {first:6.0f} ms after navigation (median of {args.runs}; runs "
          f"{', '.join(f'{v:.0f}' for v in firsts)})  vs a bare fetch of the first page {bare:5.0f} ms  ratio {first / bare:.2f}")  # fmt: skip
    return {"review_first_cards_ms": round(first, 1), "review_bare_fetch_ms": round(bare, 1),
            "review_ratio": round(first / bare, 3), "alerts": args.alerts}  # fmt: skip


def live_stack_figures(browser: Any, args: argparse.Namespace, bootstrap: str) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="vigil-bench-console-"))
    port = free_port()
    config_path = write_config(folder, bootstrap, f"bench-console-{uuid.uuid4().hex[:8]}", port, args.cameras, args.fps)
    env = os.environ | {"YOLO_OFFLINE": "1"}
    log = open(folder / "up.log", "w")
    up = subprocess.Popen([sys.executable, "-m", "vigil", "up", "--config", str(config_path)], cwd=folder, env=env,
                          stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    try:
        wait(lambda: sum(1 for c in client.get("/api/cameras").json()["items"] if c["latest"]) >= args.cameras,
             300, f"{args.cameras} cameras with frames", up)  # fmt: skip
        time.sleep(args.settle)
        base = f"http://127.0.0.1:{port}"
        figures: dict[str, Any] = live_figures(browser, base, args.cameras, args.runs, args.watch)
        sizes = page_bytes(browser, base)
        figures["bytes_per_page"] = sizes
        figures["bytes_max_ratio_to_budget"] = round(max(sizes.values()) / BUDGET, 4)
        return figures
    finally:
        client.close()
        stop(up)
        log.close()


def run(args: argparse.Namespace, bootstrap: str) -> int:
    print(f"load: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1/5/15 min), cpus {os.cpu_count()}")
    figures: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium"))
        if args.only != "review":
            figures.update(live_stack_figures(browser, args, bootstrap))
        if args.only != "live":
            figures.update(review_figures(browser, args, bootstrap))
        browser.close()
    figures["load_1min"] = round(os.getloadavg()[0], 2)
    print(json.dumps({"bench": "console", **figures}))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, default=8)
    parser.add_argument("--fps", type=float, default=2.0, help="per camera (8 x 2 fps = 16 fps for one detector)")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--watch", type=float, default=20.0, help="seconds of frames for the latency figures")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds after the cameras stream, before measuring")
    parser.add_argument("--only", choices=("live", "review"), help="one half of the benchmark")
    args = parser.parse_args()
    with broker_for_bench(os.environ.get("VIGIL_TEST_BOOTSTRAP")) as bootstrap:
        return run(args, bootstrap)


if __name__ == "__main__":
    raise SystemExit(main())
