"""A throwaway HTTP server on 127.0.0.1 serving fixed bytes per path, for the download tests."""

from __future__ import annotations

import http.server
import threading


class LoopbackServer:
    """``pages``: path (with leading slash) -> (body, content type). ``url`` ends with a slash."""

    def __init__(self, pages: dict[str, tuple[bytes, str]]) -> None:
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                page = pages.get(self.path)
                if page is None:
                    self.send_error(404)
                    return
                body, kind = page
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def shutdown(self) -> None:
        self.httpd.shutdown()
