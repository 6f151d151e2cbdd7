"""A small HTTP file server for tests: ``HEAD``/``GET`` with ``Range``, a request log, and a way
to break a download off mid-body.

    python tests/range_server.py ROOT PORT

Serves the files under ROOT on 127.0.0.1:PORT (HTTP/1.0: one request per connection). Python's
``SimpleHTTPRequestHandler`` ignores ``Range``; this one answers ``bytes=A-B`` and ``bytes=A-``
with ``206 Partial Content``. Every request is logged on stdout as one line,
``<METHOD> <path> range=<Range header or ->``, flushed at once.

Server errors: any path under ``/error/`` gets ``500 Internal Server Error``.

Interruption: when the file ``ROOT/.cut-at`` exists, holding a byte offset N, the next response
whose body covers byte N of its file sends its headers (with the full ``Content-Length``) and
the body up to byte N, then closes the connection; the file is deleted, so this happens once.
"""

from __future__ import annotations

import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CUT_FILE = ".cut-at"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
BLOCK = 1 << 16


class RangeHandler(BaseHTTPRequestHandler):
    root: Path

    def log_message(self, format, *args) -> None:  # the request log below replaces it
        pass

    def _log(self) -> None:
        sys.stdout.write(f"{self.command} {self.path} range={self.headers.get('Range', '-')}\n")
        sys.stdout.flush()

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        self._log()
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if body:
                self.wfile.write(b"ok")
            return
        if self.path.startswith("/error/"):
            self.send_error(500)
            return
        path = (self.root / self.path.lstrip("/")).resolve()
        if self.root not in path.parents or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        start, end = 0, size  # [start, end)
        match = _RANGE.match(self.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)) + 1, size) if match.group(2) else size
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        stop = self._cut(start, end)
        with open(path, "rb") as handle:
            handle.seek(start)
            left = stop - start
            while left > 0:
                block = handle.read(min(BLOCK, left))
                if not block:
                    break
                self.wfile.write(block)
                left -= len(block)
        if stop < end:  # break the download off: the client sees a short body
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

    def _cut(self, start: int, end: int) -> int:
        """Where this body stops: the offset in ``ROOT/.cut-at`` (once), else ``end``."""
        marker = self.root / CUT_FILE
        try:
            at = int(marker.read_text().strip())
        except (OSError, ValueError):
            return end
        if not start <= at < end:
            return end
        marker.unlink(missing_ok=True)
        return at


def main() -> None:
    root, port = Path(sys.argv[1]).resolve(), int(sys.argv[2])
    RangeHandler.root = root
    server = ThreadingHTTPServer(("127.0.0.1", port), RangeHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
