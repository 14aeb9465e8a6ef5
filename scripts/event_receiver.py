#!/usr/bin/env python3
"""A business-event receiver for trying the service out: verifies each webhook with the
`standardwebhooks` package (as an app backend would) and prints it, one line per event.

    .venv/bin/python scripts/event_receiver.py            # listens on 127.0.0.1:9000
    EVENT_ENDPOINTS="$(.venv/bin/python scripts/event_receiver.py --endpoints)" scripts/dev.sh

PORT and SECRET (a whsec_ key) override the defaults; answer with STATUS (e.g. 503) to watch
the service retry.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

PORT = int(os.environ.get("PORT", "9000"))
# base64 of "local-event-receiver-secret-0001": fine on a laptop, never in production.
SECRET = os.environ.get("SECRET", "whsec_bG9jYWwtZXZlbnQtcmVjZWl2ZXItc2VjcmV0LTAwMDE=")
STATUS = int(os.environ.get("STATUS", "200"))


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        try:
            event = Webhook(SECRET).verify(body, dict(self.headers.items()))
            data = event["data"]
            who = data.get("uid", "")
            print(f"{event['occurred_at']}  {event['room_name']} #{event['seq']:<3} "
                  f"{event['type']:<22} {who}  (id {event['id']})", flush=True)
            status = STATUS
        except WebhookVerificationError as err:
            print(f"refused: {err}", flush=True)
            status = 400
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    if "--endpoints" in sys.argv:
        print(json.dumps([{"url": f"http://127.0.0.1:{PORT}/events", "secret": SECRET}]))
        sys.exit(0)
    print(f"receiving business events on http://127.0.0.1:{PORT}/events", flush=True)
    ThreadingHTTPServer(("127.0.0.1", PORT), Receiver).serve_forever()
