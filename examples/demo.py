"""`make demo`: the whole vigil pipeline on the shared footage, ending by itself with a summary.

1. Starts a local webhook receiver that verifies every delivery with the `standardwebhooks`
   library (as any receiver should) and prints it.
2. Runs `vigil up --config examples/demo.yaml --exit-when-done`: the embedded Kafka broker, the
   two recordings replayed as cameras, a detection worker, the aggregator and webhook delivery.
3. Prints what arrived: alerts per camera, verified signatures, duplicates.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

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


def main() -> int:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secret)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    print(f"demo: webhook receiver on {url}, verifying Standard Webhooks signatures", flush=True)
    env = os.environ | {"VIGIL_DEMO_WEBHOOK_URL": url, "VIGIL_DEMO_WEBHOOK_SECRET": secret}
    command = [sys.executable, "-m", "vigil", "up", "--config", "examples/demo.yaml", "--exit-when-done"]
    started = time.monotonic()
    try:
        code = subprocess.run(command, cwd=REPO, env=env, check=False).returncode
    except KeyboardInterrupt:
        code = 130
    receiver.shutdown()
    wall = time.monotonic() - started
    print("\ndemo summary", flush=True)
    cameras = sorted({camera for camera, _ in receiver.events})
    for camera in cameras:
        counts = {event: receiver.events[(camera, event)] for event in ("started", "updated", "ended")}
        print(f"  {camera:<11} alerts started {counts['started']}, ended {counts['ended']}")
    total = sum(receiver.events.values())
    print(
        f"  {total} deliveries verified, {receiver.rejected} rejected, {receiver.duplicates} duplicates, "
        f"in {wall:.1f}s (vigil up exited {code})"
    )
    print(json.dumps({"deliveries": total, "rejected": receiver.rejected, "exit_code": code}))
    return 0 if code == 0 and total > 0 and receiver.rejected == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
