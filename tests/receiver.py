"""A real HTTP callback receiver on 127.0.0.1 that checks each callback's HMAC signature."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from callbacks import SIGNATURE_HEADER, verify


class Receiver:
    """Records every callback; `secrets` maps job id -> secret; `fail_first` answers 500 that many times;
    `delay` holds each answer that many seconds and then refuses it."""

    def __init__(self):
        self.secrets: dict[int, str] = {}
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.fail_first = 0
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                payload = json.loads(body)
                if receiver.delay:  # a stuck receiver: answers late, and the callback does not count
                    time.sleep(receiver.delay)
                    self.send_response(503)
                    self.end_headers()
                    return
                with receiver.lock:
                    secret = receiver.secrets.get(payload.get("job_id"), "")
                    if not verify(secret, body, self.headers.get(SIGNATURE_HEADER)):
                        receiver.bad_signatures += 1
                        self.send_response(401)
                        self.end_headers()
                        return
                    if receiver.fail_first > 0:
                        receiver.fail_first -= 1
                        self.send_response(500)
                        self.end_headers()
                        return
                    receiver.received.append(payload)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    def events(self) -> list[tuple[int, int, str]]:
        """(job id, chunk, event) of every accepted callback."""
        with self.lock:
            return [(p["job_id"], p["chunk"], p["event"]) for p in self.received]
