"""A real HTTP server on 127.0.0.1 (a thread) that plays every kind of image host the
URL fetcher must cope with: good images, redirects, oversize and endless bodies, text,
errors, and a slow drip that records when the client hung up."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse


class ImageServer:
    def __init__(self, image_dir: Path | None = None, oversize_bytes: int = 4_000_000):
        self.image_dir = image_dir
        self.oversize_bytes = oversize_bytes
        self.drip_hung_up = threading.Event()
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                server.requests.append(self.path)
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                route = getattr(server, "route_" + url.path.strip("/").split("/")[0].replace("-", "_"), None)
                if route is None:
                    return self.reply(404, b"no such route")
                route(self, url.path, query)

            def reply(self, status: int, body: bytes, ctype="application/octet-stream", headers=()):
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> ImageServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # Routes: GET /<name>/... -> route_<name>(handler, path, query)

    def route_img(self, h, path, query):
        """/img/<file>: a file of image_dir."""
        data = (self.image_dir / path.split("/", 2)[2]).read_bytes()
        h.reply(200, data, "image/jpeg")

    def route_bytes(self, h, path, query):
        """/bytes?hex=..: exactly these bytes (non-image bodies)."""
        h.reply(200, bytes.fromhex(query.get("hex", "")), query.get("type", "text/plain"))

    def route_redirect(self, h, path, query):
        """/redirect?to=URL"""
        h.reply(int(query.get("status", 302)), b"", headers=[("Location", query["to"])])

    def route_echo_host(self, h, path, query):
        h.reply(200, h.headers.get("Host", "").encode(), "text/plain")

    def route_big(self, h, path, query):
        """A declared Content-Length over the cap."""
        h.send_response(200)
        h.send_header("Content-Length", str(self.oversize_bytes))
        h.end_headers()
        self._stream(h, self.oversize_bytes)

    def route_endless(self, h, path, query):
        """No Content-Length: the body only ends when the connection closes (HTTP/1.0)."""
        h.send_response(200)
        h.end_headers()
        self._stream(h, self.oversize_bytes)

    def route_status(self, h, path, query):
        h.reply(int(path.split("/")[2]), b"nope", "text/plain")

    def route_drip(self, h, path, query):
        """A byte every `every` seconds for `seconds`; notes when the client hangs up."""
        seconds, every = float(query.get("seconds", 20)), float(query.get("every", 0.2))
        h.send_response(200)
        h.send_header("Content-Length", "1000000")
        h.end_headers()
        end = time.monotonic() + seconds
        try:
            while time.monotonic() < end:
                h.wfile.write(b"x")
                h.wfile.flush()
                time.sleep(every)
        except OSError:  # broken pipe / reset: the client gave up
            self.drip_hung_up.set()

    @staticmethod
    def _stream(h, total: int, chunk: int = 64 * 1024) -> None:
        try:
            sent = 0
            while sent < total:
                h.wfile.write(b"\0" * min(chunk, total - sent))
                sent += chunk
        except OSError:
            pass
