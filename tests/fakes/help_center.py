"""A fake help-center web site: http.server on port 0 in a thread, serving pages from a
dict, with ETag / Last-Modified validators (304s), robots.txt, redirects and a record of
every request (path, headers) to assert on."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LAST_MODIFIED = "Mon, 02 Nov 2026 10:00:00 GMT"


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    status: int


@dataclass
class HelpCenter:
    """Pages by path: (body, content type), or a redirect target, or a status."""

    pages: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    base_url: str = ""

    def add_folder(self, folder: Path, prefix: str = "/help/") -> list[str]:
        """Serve every file of `folder` under `prefix`; returns their URLs."""
        types = {".html": "text/html; charset=utf-8", ".md": "text/markdown; charset=utf-8"}
        urls = []
        for file in sorted(folder.iterdir()):
            path = prefix + file.name
            self.pages[path] = (file.read_bytes(), types.get(file.suffix, "text/plain"))
            urls.append(self.base_url + path)
        return urls

    def sitemap(self, urls: list[str], path: str = "/sitemap.xml") -> str:
        body = "".join(f"<url><loc>{url}</loc></url>" for url in urls)
        xml = f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{body}</urlset>'
        self.pages[path] = (xml.encode(), "application/xml")
        return self.base_url + path

    def fetched(self, path: str) -> list[Request]:
        return [request for request in self.requests if request.path == path]


def _handler(site: HelpCenter) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(
            self, status: int, body: bytes = b"", headers: dict[str, str] | None = None
        ) -> None:
            site.requests.append(Request(self.path, dict(self.headers.items()), status))
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path in site.statuses:
                self._answer(site.statuses[self.path])
            elif self.path in site.redirects:
                self._answer(302, headers={"Location": site.redirects[self.path]})
            elif self.path in site.pages:
                body, content_type = site.pages[self.path]
                etag = '"' + hashlib.sha1(body).hexdigest()[:16] + '"'
                validators = {"ETag": etag, "Last-Modified": LAST_MODIFIED}
                if self.headers.get("If-None-Match") == etag:
                    self._answer(304, headers=validators)
                else:
                    self._answer(200, body, {"Content-Type": content_type, **validators})
            else:
                self._answer(404, b"not found", {"Content-Type": "text/plain"})

    return Handler


@contextmanager
def serve_help_center(site: HelpCenter | None = None) -> Iterator[HelpCenter]:
    site = site or HelpCenter()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    site.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
