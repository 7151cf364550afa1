"""Web sources against a local help-center server: sitemaps, robots.txt, conditional
requests, deleted pages, login walls, size caps, unreachable hosts."""

from __future__ import annotations

from pathlib import Path

from retrieval.knowledge.sources import IngestOptions, collect
from retrieval.knowledge.web import USER_AGENT, WebFetcher
from tests.fakes.help_center import serve_help_center

HELP = Path(__file__).resolve().parents[2] / "fixtures" / "help_center"


def options(tmp_path: Path, **changes: object) -> IngestOptions:
    values: dict[str, object] = {"web_delay": 0.0, "cache_path": tmp_path / "cache.json"}
    values.update(changes)
    return IngestOptions(**values)  # type: ignore[arg-type]


def test_a_sitemap_imports_every_page_politely_and_a_resync_asks_conditionally(
    tmp_path: Path,
) -> None:
    with serve_help_center() as site:
        urls = site.add_folder(HELP)
        site.pages["/robots.txt"] = (b"User-agent: *\nDisallow: /help/privacy.md\n", "text/plain")
        sitemap = site.sitemap(urls)
        entries, report = collect([sitemap], options(tmp_path))
        assert report.documents == 11  # privacy.md is disallowed by robots.txt
        assert any("robots.txt" in s.reason and "privacy" in s.name for s in report.skipped)
        assert not site.fetched("/help/privacy.md")
        assert all(r.headers["User-Agent"] == USER_AGENT for r in site.requests)
        damaged = next(
            e for e in entries if e.title == "Returns and refunds › Damaged or broken items"
        )
        assert damaged.url == site.base_url + "/help/returns.html#damaged-items"
        assert damaged.is_passage
        # Navigation, cookie banners and footers are not knowledge.
        text = " ".join(e.answer for e in entries).lower()
        assert "accept all cookies" not in text and "© 2026" not in text

        site.requests.clear()
        again, second = collect([sitemap], options(tmp_path))
        assert [e.id for e in again] == [e.id for e in entries]
        assert second.pages_unchanged == 11
        page = site.fetched("/help/returns.html")[0]
        assert page.status == 304 and page.headers["If-None-Match"]
        # A page named directly (not through a sitemap) is asked conditionally as well.
        direct = site.base_url + "/help/warranty.md"
        collect([direct], options(tmp_path))
        site.requests.clear()
        entries, third = collect([direct], options(tmp_path))
        assert [r.status for r in site.fetched("/help/warranty.md")] == [304]
        assert third.pages_unchanged == 1 and entries[0].title.startswith("Machine warranty")


def test_deleted_pages_go_failed_pages_keep_their_last_import(tmp_path: Path) -> None:
    with serve_help_center() as site:
        urls = site.add_folder(HELP)
        sitemap = site.sitemap(urls)
        first, _ = collect([sitemap], options(tmp_path))
        returns = {e.id for e in first if e.document and e.document.endswith("returns.html")}
        assert returns
        site.statuses["/help/returns.html"] = 404  # deleted
        site.statuses["/help/shipping.html"] = 503  # down for a moment
        entries, report = collect([sitemap], options(tmp_path))
        ids = {e.id for e in entries}
        assert not returns & ids
        assert any(e.title.startswith("Shipping and delivery") for e in entries)
        assert [k.name for k in report.kept] == [site.base_url + "/help/shipping.html"]
        assert "HTTP 503" in report.kept[0].reason
        assert any("404" in s.reason for s in report.skipped)
        # The page no longer listed in the sitemap disappears as well.
        site.sitemap([u for u in urls if "gift-cards" not in u])
        entries, _ = collect([sitemap], options(tmp_path))
        assert not any(e.title.startswith("Gift cards") for e in entries)


def test_a_whole_site_down_keeps_every_page_it_gave_before(tmp_path: Path) -> None:
    with serve_help_center() as site:
        sitemap = site.sitemap(site.add_folder(HELP))
        first, _ = collect([sitemap], options(tmp_path))
    entries, report = collect([sitemap], options(tmp_path, web_timeout=2.0))  # server gone
    assert {e.id for e in entries} == {e.id for e in first}
    assert report.kept and "unreachable" in report.kept[0].reason


def test_bad_pages_are_reported_by_name_and_the_rest_goes_on(tmp_path: Path) -> None:
    with serve_help_center() as site:
        good = site.add_folder(HELP)[:2]
        site.redirects["/help/internal"] = "/login?next=/help/internal"
        site.pages["/login"] = (b"<form><input type='password'></form>", "text/html")
        site.pages["/help/huge.html"] = (b"<p>" + b"x" * 3_000_000 + b"</p>", "text/html")
        site.pages["/help/binary.html"] = (b"\x00\x01", "application/octet-stream")
        loop_a = site.base_url + "/sitemap-a.xml"
        loop_b = site.base_url + "/sitemap-b.xml"
        index = '<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><sitemap><loc>{}</loc></sitemap></sitemapindex>'
        site.pages["/sitemap-a.xml"] = (index.format(loop_b).encode(), "application/xml")
        site.pages["/sitemap-b.xml"] = (index.format(loop_a).encode(), "application/xml")
        sources = [
            *good,
            site.base_url + "/help/internal",
            site.base_url + "/help/huge.html",
            site.base_url + "/help/missing",
            site.base_url + "/help/binary.html",
            loop_a,
        ]
        entries, report = collect(sources, options(tmp_path, max_bytes=1_000_000))
    reasons = {s.name.removeprefix(site.base_url): s.reason for s in report.skipped}
    assert "login" in reasons["/help/internal"]
    assert "MB cap" in reasons["/help/huge.html"]
    assert "404" in reasons["/help/missing"]
    assert "unsupported format" in reasons["/help/binary.html"]
    assert len(site.fetched("/sitemap-a.xml")) == 1  # the loop was read once
    assert report.documents == 2 and entries


def test_the_fetcher_waits_between_requests_to_one_host() -> None:
    pauses: list[float] = []
    with serve_help_center() as site:
        site.pages["/a"] = (b"<p>a</p>", "text/html")
        with WebFetcher(delay=5.0, sleep=pauses.append) as fetcher:
            fetcher.fetch(site.base_url + "/a")  # robots.txt first, then the page
            fetcher.fetch(site.base_url + "/a")
    assert len(pauses) == 2 and all(4.0 < pause <= 5.0 for pause in pauses)
