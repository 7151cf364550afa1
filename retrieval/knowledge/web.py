"""Fetching web pages politely: robots.txt, a user agent, a pause between requests to one
host, conditional requests (ETag / Last-Modified), redirects, timeouts and a size cap;
sitemaps expanded with loop protection.

Synchronous on purpose: a sync runs in a worker thread (see bots.faq_sync) and fetches
one page at a time per host anyway, to stay polite.
"""

from __future__ import annotations

import time
import urllib.robotparser
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from retrieval.knowledge.document import DocumentError

USER_AGENT = "deskmate-knowledge-sync/0.1 (+https://github.com/deskmate; support knowledge import)"
SITEMAP_MAX_DEPTH = 4
SITEMAP_MAX_URLS = 50_000
MAX_REDIRECTS = 5
_LOGIN_WORDS = ("login", "log-in", "signin", "sign-in", "sso", "auth")


class PageGone(DocumentError):
    """The page answered 404 or 410: it was deleted, and its passages go with it."""


class FetchFailed(DocumentError):
    """The page could not be fetched this time (network, timeout, 5xx, 429): what was
    imported from it before is kept."""


@dataclass(frozen=True, slots=True)
class Page:
    """A fetched page. `body` is None when the server said it is unchanged (304)."""

    url: str
    body: bytes | None
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None


class WebFetcher:
    """One HTTP client for a sync; remembers robots.txt and the last request per host."""

    def __init__(
        self,
        *,
        user_agent: str = USER_AGENT,
        delay: float = 1.0,
        timeout: float = 20.0,
        max_bytes: int = 50 * 1024 * 1024,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.user_agent = user_agent
        self.delay = delay
        self.max_bytes = max_bytes
        self._sleep = sleep
        self._client = httpx.Client(
            headers={"User-Agent": user_agent},
            timeout=timeout,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            transport=transport,
        )
        self._robots: dict[str, urllib.robotparser.RobotFileParser | None] = {}
        self._last: dict[str, float] = {}
        self.requests = 0  # every HTTP request made (tests, the summary)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> WebFetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- politeness -------------------------------------------------------------------

    def _pause(self, url: str) -> None:
        host = urlsplit(url).netloc
        robots = self._robots.get(host)
        delay = self.delay
        if robots is not None:
            delay = max(delay, float(robots.crawl_delay(self.user_agent) or 0))
        wait = self._last.get(host, -1e9) + delay - time.monotonic()
        if wait > 0:
            self._sleep(wait)
        self._last[host] = time.monotonic()

    def allowed(self, url: str) -> bool:
        """Whether robots.txt lets this user agent fetch `url` (no robots.txt: yes)."""
        parts = urlsplit(url)
        host = parts.netloc
        if host not in self._robots:
            robots_url = f"{parts.scheme}://{host}/robots.txt"
            self._pause(robots_url)
            self.requests += 1
            parser: urllib.robotparser.RobotFileParser | None = urllib.robotparser.RobotFileParser(
                robots_url
            )
            try:
                response = self._client.get(robots_url)
            except httpx.HTTPError:
                response = None
            assert parser is not None
            if response is None or response.status_code >= 500:
                parser = None  # unknown: allowed, and asked again next sync
            elif response.status_code in (401, 403):
                parser.parse(["User-agent: *", "Disallow: /"])  # robotparser's own convention
            elif response.status_code >= 400:
                parser.parse([])  # no robots.txt: everything allowed
            else:
                parser.parse(response.text.splitlines())
            self._robots[host] = parser
        robots = self._robots[host]
        return robots is None or robots.can_fetch(self.user_agent, url)

    # -- fetching ---------------------------------------------------------------------

    def fetch(self, url: str, etag: str | None = None, last_modified: str | None = None) -> Page:
        """GET `url`, conditionally when a previous ETag / Last-Modified is known."""
        if not self.allowed(url):
            raise PageGone(url, "disallowed by robots.txt for deskmate's user agent")
        headers = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        self._pause(url)
        self.requests += 1
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                final = str(response.url)
                if response.status_code == 304:
                    return Page(final, None, etag=etag, last_modified=last_modified)
                if final != url and any(w in urlsplit(final).path.lower() for w in _LOGIN_WORDS):
                    raise FetchFailed(url, f"redirected to a login page ({final}): login wall?")
                self._check_status(url, response)
                body = self._read_capped(url, response)
                return Page(
                    final,
                    body,
                    response.headers.get("content-type", "").split(";")[0].strip().lower(),
                    response.headers.get("etag"),
                    response.headers.get("last-modified"),
                )
        except httpx.TooManyRedirects as exc:
            raise FetchFailed(url, f"more than {MAX_REDIRECTS} redirects (a loop?)") from exc
        except httpx.TimeoutException as exc:
            raise FetchFailed(url, "timed out") from exc
        except httpx.HTTPError as exc:
            raise FetchFailed(url, f"unreachable ({type(exc).__name__})") from exc

    def _check_status(self, url: str, response: httpx.Response) -> None:
        status = response.status_code
        if status in (404, 410):
            raise PageGone(url, f"HTTP {status}: the page no longer exists")
        if status in (401, 403):
            raise FetchFailed(url, f"HTTP {status}: access denied (login wall?)")
        if status >= 400:
            raise FetchFailed(url, f"HTTP {status}")

    def _read_capped(self, url: str, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise FetchFailed(url, _too_big(int(declared), self.max_bytes))
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise FetchFailed(url, _too_big(size, self.max_bytes, at_least=True))
            chunks.append(chunk)
        return b"".join(chunks)

    # -- sitemaps ---------------------------------------------------------------------

    def sitemap_urls(self, url: str, body: bytes | None = None) -> list[str]:
        """Page URLs listed by a sitemap or sitemap index, nested ones followed up to
        SITEMAP_MAX_DEPTH deep; a sitemap seen twice (a loop) is read once."""
        seen: set[str] = set()
        pages: list[str] = []

        def visit(sitemap: str, depth: int, data: bytes | None) -> None:
            if sitemap in seen or depth > SITEMAP_MAX_DEPTH or len(pages) >= SITEMAP_MAX_URLS:
                return
            seen.add(sitemap)
            if data is None:
                page = self.fetch(sitemap)
                data = page.body or b""
            kind, locations = parse_sitemap(sitemap, data)
            for location in locations:
                absolute = urljoin(sitemap, location)
                if kind == "sitemapindex":
                    visit(absolute, depth + 1, None)
                elif absolute not in pages and len(pages) < SITEMAP_MAX_URLS:
                    pages.append(absolute)

        visit(url, 0, body)
        return pages


def _too_big(size: int, cap: int, at_least: bool = False) -> str:
    more = "over " if at_least else ""
    return f"{more}{size / 1e6:.1f} MB, above the {cap / 1e6:.0f} MB cap (DESKMATE_DOCUMENT_MAX_MB)"


def parse_sitemap(url: str, data: bytes) -> tuple[str, list[str]]:
    """("urlset" | "sitemapindex", the <loc> values). Entities and DTDs are not resolved."""
    from lxml import etree

    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        root = etree.fromstring(data, parser=parser)
    except etree.XMLSyntaxError as exc:
        raise FetchFailed(url, f"not a valid sitemap XML ({exc.msg})") from exc
    kind = etree.QName(root).localname.lower()
    if kind not in ("urlset", "sitemapindex"):
        raise FetchFailed(url, f"not a sitemap (root element <{kind}>)")
    locations = [
        (element.text or "").strip()
        for element in root.iter()
        if isinstance(element.tag, str) and etree.QName(element).localname == "loc"
    ]
    return kind, [location for location in locations if location]


def looks_like_sitemap(url: str, content_type: str, body: bytes) -> bool:
    if urlsplit(url).path.lower().endswith(".xml") or content_type.endswith("xml"):
        head = body[:2000].lower()
        return b"<urlset" in head or b"<sitemapindex" in head
    return False
