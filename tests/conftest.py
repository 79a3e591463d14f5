"""Shared pytest fixtures.

``loopback_server`` serves a temporary folder over real HTTP on 127.0.0.1, so download code
(metadata fetch, image shards) runs against a real socket with no internet: it honours Range
requests (206), can fail a path with an HTTP status, and can drop a connection midway once.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("CURATE_NO_PROGRESS", "1")

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class LoopbackServer:
    """A folder served over HTTP on 127.0.0.1 (random port, one thread per request).

    - ``root``: the folder served; write files into it.
    - ``url(relpath)``: the http URL of a file under ``root``.
    - ``drop_after(relpath, nbytes)``: the next request for that path sends the full headers but
      only ``nbytes`` of the body, then closes the connection abruptly (once).
    - ``fail(relpath, status)``: every request for that path answers with that HTTP status
      (``fail(relpath, None)`` clears it).
    - ``requests``: ``(path, range_header_or_None)`` for each request seen, in order.
    """

    root: Path
    port: int = 0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    _drops: dict[str, int] = field(default_factory=dict)
    _fails: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, relpath: str | os.PathLike[str]) -> str:
        rel = Path(relpath).as_posix().lstrip("/")
        return f"{self.base_url}/{urllib.parse.quote(rel)}"

    def drop_after(self, relpath: str | os.PathLike[str], nbytes: int) -> None:
        with self._lock:
            self._drops["/" + Path(relpath).as_posix().lstrip("/")] = int(nbytes)

    def fail(self, relpath: str | os.PathLike[str], status: int | None) -> None:
        key = "/" + Path(relpath).as_posix().lstrip("/")
        with self._lock:
            if status is None:
                self._fails.pop(key, None)
            else:
                self._fails[key] = int(status)

    def range_requests(self, relpath: str | os.PathLike[str]) -> list[str]:
        """The Range headers sent for one path (requests without one are left out)."""
        key = "/" + Path(relpath).as_posix().lstrip("/")
        return [r for p, r in self.requests if p == key and r]


def _make_handler(server: LoopbackServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _serve(self, *, body: bool) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
            range_header = self.headers.get("Range")
            with server._lock:
                server.requests.append((path, range_header))
                status = server._fails.get(path)
                drop = server._drops.pop(path, None) if body else None
            if status is not None:
                self._error(status)
                return
            file = (server.root / path.lstrip("/")).resolve()
            if server.root.resolve() not in file.parents or not file.is_file():
                self._error(404)
                return
            data = file.read_bytes()
            size = len(data)
            start, end = 0, size - 1
            code = 200
            if range_header:
                m = _RANGE.match(range_header.strip())
                if not m or (not m.group(1) and not m.group(2)):
                    self._error(416, size)
                    return
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:  # suffix range: the last N bytes
                    start = max(size - int(m.group(2)), 0)
                if start >= size or start > end:
                    self._error(416, size)
                    return
                code = 206
            chunk = data[start : end + 1]
            self.send_response(code)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk)))
            self.send_header("Accept-Ranges", "bytes")
            if code == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            if not body:
                return
            if drop is not None:
                self.wfile.write(chunk[:drop])
                self.wfile.flush()
                # an abrupt close: the client sees fewer bytes than Content-Length promised
                self.close_connection = True
                try:
                    self.connection.shutdown(2)
                except OSError:
                    pass
                return
            self.wfile.write(chunk)

        def _error(self, status: int, size: int | None = None) -> None:
            payload = f"{status} {http.server.BaseHTTPRequestHandler.responses.get(status, ('',))[0]}\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            if size is not None:
                self.send_header("Content-Range", f"bytes */{size}")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

    return Handler


class _QuietServer(http.server.ThreadingHTTPServer):
    # a client hanging up mid-response (as download tests make it do) is expected here; the
    # default handler prints a traceback to stderr, which would leak into another test's capsys
    def handle_error(self, request: object, client_address: object) -> None:
        pass


@pytest.fixture
def loopback_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 serving a fresh temporary folder (see ``LoopbackServer``)."""
    server = LoopbackServer(root=tmp_path_factory.mktemp("served"))
    httpd = _QuietServer(("127.0.0.1", 0), _make_handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    # a short poll interval keeps fixture teardown (shutdown waits one poll) fast
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
