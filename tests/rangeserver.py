"""A static file server on 127.0.0.1 that honours HTTP Range requests, for tests of reading
STAC items and COGs over HTTP (what GDAL's /vsicurl/ sends; Python's http.server ignores Range)."""

from __future__ import annotations

import http.server
import re
import threading
from pathlib import Path


class RangeServer:
    """Serves ``folder`` (and ``extra`` {path: bytes}) on 127.0.0.1 with single-range support;
    ``requests`` records every request line."""

    def __init__(self, folder: Path, extra: dict[str, bytes] | None = None):
        self.folder, self.extra, self.requests = Path(folder), dict(extra or {}), []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _serve(self, body: bool):
                path = self.path.split("?")[0]
                outer.requests.append(f"{self.command} {path} {self.headers.get('Range')}")
                data = outer.extra.get(path)
                target = (outer.folder / path.lstrip("/")).resolve()
                if data is None and target.is_file() and target.is_relative_to(outer.folder.resolve()):
                    data = target.read_bytes()
                if data is None:
                    self.send_error(404)
                    return
                start, end, status = 0, len(data) - 1, 200
                m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
                if m and (m.group(1) or m.group(2)):
                    if m.group(1):
                        start = int(m.group(1))
                        end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                    else:
                        start = max(0, len(data) - int(m.group(2)))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    status = 206
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(end - start + 1))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
                self.end_headers()
                if body:
                    self.wfile.write(data[start:end + 1])

            def do_GET(self):
                self._serve(True)

            def do_HEAD(self):
                self._serve(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.netloc = self.url.split("//")[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
