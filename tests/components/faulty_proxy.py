"""A tiny HTTP proxy in front of fake-gcs-server that misbehaves on cue.

fake-gcs-server always serves correct bytes and never refuses anyone; the storage
initializer must also cope with bytes corrupted in transit and with permission
errors. This proxy forwards every request to the emulator and can, per rule:
- flip a byte in the body of media downloads of objects whose name contains a string
  (the first ``times`` such responses, or all of them);
- answer every request with a status (e.g. 403) instead of forwarding it.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "te", "trailer",
       "upgrade"}


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.corrupt_match: str | None = None
        self.corrupt_times = 0  # -1: always
        self.corrupted = 0
        self.refuse_status: int | None = None
        self.requests = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                with proxy._lock:
                    proxy.requests += 1
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.refuse_status:
                    payload = (b'{"error": {"code": %d, "message": "refused by the test proxy"}}'
                               % proxy.refuse_status)
                    self.send_response(proxy.refuse_status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                conn.close()
                if (proxy.corrupt_match and "alt=media" in self.path and proxy.corrupt_match in unquote(self.path)
                        and data and resp.status < 300):
                    with proxy._lock:
                        if proxy.corrupt_times == -1 or proxy.corrupted < proxy.corrupt_times:
                            proxy.corrupted += 1
                            data = bytes([data[0] ^ 0xFF]) + data[1:]
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP:
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def corrupt(self, match: str, times: int) -> None:
        self.corrupt_match, self.corrupt_times, self.corrupted = match, times, 0

    def start(self) -> "FaultyProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
