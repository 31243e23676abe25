"""A real HTTP receiver on 127.0.0.1 for notification tests: records every POST (path, headers,
JSON body, arrival time), answers with scripted statuses (then 200), or hangs while ``hang`` is set."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from contextlib import contextmanager
from typing import Iterator


@dataclass
class Receiver:
    statuses: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    hang: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    got: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def wait_for(self, n: int, timeout: float = 10.0) -> list[dict]:
        """The first ``n`` requests (fails after ``timeout`` with what arrived)."""
        with self.got:
            assert self.got.wait_for(lambda: len(self.requests) >= n, timeout), self.requests
            return list(self.requests)

    def bodies(self, path: str | None = None) -> list[dict]:
        with self.got:
            return [r["body"] for r in self.requests if path is None or r["path"] == path]


@contextmanager
def serving(rec: Receiver | None = None) -> Iterator[Receiver]:
    """Serve ``rec`` (a new Receiver by default) until the block ends."""
    rec = rec or Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with rec.got:
                rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(body),
                                     "at": time.monotonic()})
                rec.got.notify_all()
            if rec.hang.is_set():
                rec.release.wait(30)
            status = rec.statuses.pop(0) if rec.statuses else 200
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        rec.release.set()
        server.shutdown()
        server.server_close()
