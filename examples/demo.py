"""`make demo`: the whole vigil pipeline on the shared footage, ending by itself with a summary.

1. Starts a local webhook receiver that verifies every delivery with the `standardwebhooks`
   library (as any receiver should) and prints it.
2. Generates a console password for user `demo` and passes only its hash (and a fresh media key)
   to examples/demo.yaml through the environment.
3. Runs `vigil up --config examples/demo.yaml --exit-when-done`: the embedded Kafka broker, the
   two recordings replayed as cameras, a detection worker, the aggregator, webhook delivery and
   the review service with its console.
4. Prints what arrived: alerts per camera, verified signatures, duplicates, alerts in the store.

`python examples/demo.py --keep` (or `make demo-live`) keeps the stack and the console running
after the replay, to look around; Ctrl-C stops it and prints the summary.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from vigil.passwords import hash_password

REPO = Path(__file__).resolve().parents[1]


class Receiver(ThreadingHTTPServer):
    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.webhook = Webhook(secret)
        self.lock = threading.Lock()
        self.seen: set[str] = set()
        self.events: Counter[tuple[str, str]] = Counter()
        self.rejected = 0
        self.duplicates = 0
        self.links = 0


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            alert = self.server.webhook.verify(body, dict(self.headers))
        except WebhookVerificationError:
            with self.server.lock:
                self.server.rejected += 1
            self.send_response(401)
            self.end_headers()
            return
        webhook_id = self.headers["webhook-id"]
        with self.server.lock:
            if webhook_id in self.server.seen:
                self.server.duplicates += 1
            else:
                self.server.seen.add(webhook_id)
                self.server.events[(alert["camera"], alert["event"])] += 1
                self.server.links += "snapshot_url" in alert
                box = ", ".join(f"{v:.0f}" for v in alert["box"])
                print(
                    f"  webhook ✓ verified  {alert['event']:<8} {alert['camera']:<11} {alert['rule']:<18} "
                    f"{alert['class_name']} {alert['confidence']:.2f} track {alert['track_id']} box [{box}] "
                    f"latency {alert['latency_ms']:.0f} ms",
                    flush=True,
                )
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per delivery is printed above


def web_port(wanted: int = 8080) -> int:
    """8080 when free, else any free loopback port."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            probe.bind(("127.0.0.1", 0))
            return int(probe.getsockname()[1])


def stored_alerts(store: Path) -> int | None:
    if not store.is_file():
        return None
    from web.store import AlertStore

    opened = AlertStore(store).open()
    try:
        return opened.count()
    finally:
        opened.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the stack and console running after the replay")
    parser.add_argument("--config", default="examples/demo.yaml", help="the demo config (default examples/demo.yaml)")
    args = parser.parse_args(argv)
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secret)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    print(f"demo: webhook receiver on {url}, verifying Standard Webhooks signatures", flush=True)
    password = secrets.token_urlsafe(9)
    port = web_port()
    env = os.environ | {
        "VIGIL_DEMO_WEBHOOK_URL": url,
        "VIGIL_DEMO_WEBHOOK_SECRET": secret,
        "VIGIL_DEMO_PASSWORD_HASH": hash_password(password),
        "VIGIL_DEMO_MEDIA_KEY": secrets.token_hex(32),
        "VIGIL_DEMO_WEB_PORT": str(port),
    }
    print(f"demo: console on http://127.0.0.1:{port}/  user demo, password {password}", flush=True)
    command = [sys.executable, "-m", "vigil", "up", "--config", args.config]
    if args.keep:
        print("demo: --keep: the stack keeps running after the replay; Ctrl-C stops it", flush=True)
    else:
        command.append("--exit-when-done")
    started = time.monotonic()
    try:
        code = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
    except KeyboardInterrupt:
        code = 0 if args.keep else 130
    receiver.shutdown()
    wall = time.monotonic() - started
    print("\ndemo summary", flush=True)
    cameras = sorted({camera for camera, _ in receiver.events})
    for camera in cameras:
        counts = {event: receiver.events[(camera, event)] for event in ("started", "updated", "ended")}
        print(f"  {camera:<11} alerts started {counts['started']}, ended {counts['ended']}")
    total = sum(receiver.events.values())
    stored = stored_alerts(REPO / ".state" / "demo" / "web.sqlite3")
    print(
        f"  {total} deliveries verified ({receiver.links} with signed snapshot and clip links), "
        f"{receiver.rejected} rejected, {receiver.duplicates} duplicates, in {wall:.1f}s (vigil up exited {code})"
    )
    if stored is not None:
        print(f"  review store: {stored} alerts (python examples/demo.py --keep to browse them in the console)")
    print(json.dumps({"deliveries": total, "rejected": receiver.rejected, "stored_alerts": stored, "exit_code": code}))
    return 0 if code == 0 and total > 0 and receiver.rejected == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
