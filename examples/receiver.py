"""A minimal vigil webhook receiver: verifies Standard Webhooks signatures and de-duplicates by
`webhook-id`. Run it, then point an `alerts.webhooks[].url` at http://127.0.0.1:8080/hook.

    VIGIL_WEBHOOK_SECRET=whsec_... python examples/receiver.py

Only the standard library and the `standardwebhooks` package (pip install standardwebhooks).
"""

from __future__ import annotations

import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SEEN: set[str] = set()  # use a database with a unique key in production


class Hook(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            alert = Webhook(os.environ["VIGIL_WEBHOOK_SECRET"]).verify(body, dict(self.headers))
        except WebhookVerificationError as exc:
            self.send_response(401)  # vigil dead-letters a 4xx: a wrong secret is visible there
            self.end_headers()
            self.wfile.write(str(exc).encode())
            return
        webhook_id = self.headers["webhook-id"]
        if webhook_id not in SEEN:  # a retry after a lost 2xx carries the same id
            SEEN.add(webhook_id)
            print(json.dumps({k: alert[k] for k in ("id", "event", "camera", "rule", "class_name", "confidence")}))
        self.send_response(204)
        self.end_headers()


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("PORT", "8080"))), Hook).serve_forever()
