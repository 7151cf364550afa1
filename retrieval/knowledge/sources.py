"""Gathering knowledge from every source staff name: FAQ files, folders, documents, web
pages and sitemaps, into one list of entries and a report of what was read and skipped.

FAQ files are strict, as they always were: a malformed line stops the import. Documents
and pages are lenient: one that cannot be used is reported by name with a reason and the
rest goes on. A page that cannot be fetched this time keeps what was imported from it
before (from the web cache); a page that is gone (404/410) or no longer listed in its
sitemap is dropped, so deleted articles stop being answered.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from retrieval.faq import FaqEntry, FaqFormatError, load_faq
from retrieval.knowledge.document import Document, DocumentError
from retrieval.knowledge.formats import (
    CONTENT_TYPES,
    DOCUMENT_SUFFIXES,
    MARKDOWN_SUFFIXES,
    read_document,
)
from retrieval.knowledge.passages import NearDuplicate, near_duplicates, passages, unique_ids
from retrieval.knowledge.web import FetchFailed, Page, PageGone, WebFetcher, looks_like_sitemap

FAQ_SUFFIXES = (".jsonl", ".csv")
DEFAULT_MAX_BYTES = 50 * 1024 * 1024
_FAQ_MARKERS = re.compile(r"^(##\s+.*\{#[\w.-]+\}\s*$|also:)", re.IGNORECASE | re.MULTILINE)
_H1 = re.compile(r"^#\s+\S", re.MULTILINE)
_H2 = re.compile(r"^##\s+\S", re.MULTILINE)
_H2_LINE = re.compile(r"^##\s+(.*?)\s*$", re.MULTILINE)

Source = Path | str
Progress = Callable[[int, int], None]


def is_url(source: Source) -> bool:
    return isinstance(source, str) and source.startswith(("http://", "https://"))


def as_source(text: str) -> Source:
    """A command-line or saved source: a URL stays text, anything else is a path."""
    return text if is_url(text) else Path(text)


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """How documents and pages are read (from settings; defaults suit tests)."""

    max_bytes: int = DEFAULT_MAX_BYTES
    web_delay: float = 1.0
    web_timeout: float = 20.0
    cache_path: Path | None = None  # ETags and passages of fetched pages, between syncs


@dataclass(frozen=True, slots=True)
class Skipped:
    name: str
    reason: str


@dataclass
class ImportReport:
    """What an import read: counts, what was skipped and why, notes, near-duplicates."""

    faq_entries: int = 0
    documents: int = 0
    passages: int = 0
    pages_unchanged: int = 0
    skipped: list[Skipped] = field(default_factory=list)
    kept: list[Skipped] = field(default_factory=list)  # failed now, previous version kept
    notes: list[str] = field(default_factory=list)
    duplicates: list[NearDuplicate] = field(default_factory=list)

    def render(self) -> str:
        lines = [
            f"Read {self.documents} documents ({self.passages} passages"
            + (
                f", {self.pages_unchanged} pages unchanged since the last sync"
                if self.pages_unchanged
                else ""
            )
            + f") and {self.faq_entries} FAQ entries; skipped {len(self.skipped)}."
        ]
        lines += [f"  skipped {item.name}: {item.reason}" for item in self.skipped]
        lines += [
            f"  kept the previous version of {item.name}: {item.reason}" for item in self.kept
        ]
        lines += [f"  note: {note}" for note in self.notes]
        if self.duplicates:
            lines.append(
                f"  {len(self.duplicates)} near-duplicate passage pair(s) across documents:"
            )
            lines += [
                f"    {pair.first} ~ {pair.second} ({pair.similarity:.2f})"
                for pair in self.duplicates[:20]
            ]
        return "\n".join(lines)


def markdown_is_faq(text: str) -> bool:
    """A Markdown file is a FAQ file (one `## Question` per entry) unless it is an article:
    an H1 title or front matter, and none of the FAQ markers (`{#id}` headings, `Also:`,
    every `##` heading a question), or a note without any `##` heading."""
    if _FAQ_MARKERS.search(text):
        return True
    headings = _H2_LINE.findall(text)
    if headings and all(heading.endswith("?") for heading in headings):
        return True  # "# Shop FAQ" over "## How do I ...?" entries stays a FAQ file
    if text.lstrip().startswith("---") or _H1.search(text):
        return False
    return bool(_H2.search(text))  # without a `## Question` it has no entries: a note


def _files_in(folder: Path) -> Iterator[Path]:
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(root) / name


class WebCache:
    """Per URL: the validators of the last fetch and the passages it gave."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.pages: dict[str, dict[str, object]] = {}
        if path is not None and path.exists():
            try:
                self.pages = json.loads(path.read_text())
            except (OSError, ValueError):
                self.pages = {}  # a damaged cache only costs one full fetch

    def entries(self, url: str) -> list[FaqEntry]:
        raw = self.pages.get(url, {}).get("entries", [])
        assert isinstance(raw, list)
        return [
            FaqEntry(
                id=e["id"],
                question=e["question"],
                answer=e["answer"],
                url=e.get("url"),
                document=e.get("document"),
                source=url,
            )
            for e in raw
        ]

    def save(self, pages: dict[str, dict[str, object]]) -> None:
        self.pages = pages
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        staging = self.path.with_suffix(".tmp")
        staging.write_text(json.dumps(pages, ensure_ascii=False))
        os.replace(staging, self.path)


class Collector:
    """Reads every source once; `collect` returns the entries and the report."""

    def __init__(self, options: IngestOptions, progress: Progress | None = None) -> None:
        self.options = options
        self.report = ImportReport()
        self._progress = progress
        self._done = 0
        self._total = 0
        self._cache = WebCache(options.cache_path)
        self._new_cache: dict[str, dict[str, object]] = {}

    def _advance(self, done: int = 1, more: int = 0) -> None:
        self._done += done
        self._total += more
        if self._progress is not None:
            self._progress(self._done, self._total)

    def collect(self, sources: Sequence[Source]) -> list[FaqEntry]:
        faq_files: list[Path] = []
        documents: list[tuple[Path, str]] = []  # (file, key)
        urls: list[str] = []
        for source in sources:
            if is_url(source):
                urls.append(str(source))
                continue
            path = Path(source)
            if path.is_dir():
                for file in _files_in(path):
                    key = file.relative_to(path.parent).as_posix()
                    self._sort(file, key, faq_files, documents, in_folder=True)
            else:
                self._sort(path, path.name, faq_files, documents, in_folder=False)
        entries: list[FaqEntry] = load_faq(faq_files) if faq_files else []
        self.report.faq_entries = len(entries)
        self._advance(0, len(documents) + len(urls))
        for file, key in documents:
            self._read_file(file, key, entries)
            self._advance()
        if urls:
            with WebFetcher(
                delay=self.options.web_delay,
                timeout=self.options.web_timeout,
                max_bytes=self.options.max_bytes,
            ) as fetcher:
                for url in urls:
                    self._read_url(fetcher, url, entries)
                    self._advance()
            self._cache.save(self._new_cache)
        self.report.duplicates = near_duplicates(entries)
        if not entries:
            raise FaqFormatError(
                ", ".join(str(s) for s in sources),
                None,
                "nothing to import: "
                + ("; ".join(f"{s.name}: {s.reason}" for s in self.report.skipped) or "no sources"),
            )
        return unique_ids(entries)

    def _sort(
        self,
        path: Path,
        key: str,
        faq_files: list[Path],
        documents: list[tuple[Path, str]],
        *,
        in_folder: bool,
    ) -> None:
        suffix = path.suffix.lower()
        if not in_folder and not path.exists():
            if suffix not in (*FAQ_SUFFIXES, *MARKDOWN_SUFFIXES):
                # A mistyped name stops the import: what was meant is not guessed at.
                raise FaqFormatError(path, None, "no such file or folder")
            faq_files.append(path)  # load_faq names the missing file, as it always has
        elif suffix in FAQ_SUFFIXES:
            faq_files.append(path)
        elif suffix in MARKDOWN_SUFFIXES:
            try:
                text = path.read_bytes().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError):
                text = "# unreadable"  # read as a document, which reports why by name
            if markdown_is_faq(text):
                faq_files.append(path)
            else:
                documents.append((path, key))
        elif suffix in DOCUMENT_SUFFIXES:
            documents.append((path, key))
        else:
            self.report.skipped.append(Skipped(str(path), f"unsupported format {suffix!r}"))

    def _add(self, document: Document, entries: list[FaqEntry]) -> list[FaqEntry]:
        found = passages(document)
        self.report.documents += 1
        self.report.passages += len(found)
        self.report.notes += [f"{document.key}: {note}" for note in document.notes]
        entries.extend(found)
        return found

    def _read_file(self, file: Path, key: str, entries: list[FaqEntry]) -> None:
        try:
            size = file.stat().st_size
            if size > self.options.max_bytes:
                raise DocumentError(
                    key,
                    f"{size / 1e6:.1f} MB, above the {self.options.max_bytes / 1e6:.0f} MB cap "
                    "(DESKMATE_DOCUMENT_MAX_MB)",
                )
            document = read_document(key, file.read_bytes(), file.suffix)
        except OSError as exc:
            self.report.skipped.append(Skipped(str(file), f"cannot read ({exc.strerror})"))
            return
        except DocumentError as exc:
            self.report.skipped.append(Skipped(str(file), exc.reason))
            return
        self._add(document, entries)

    def _read_url(self, fetcher: WebFetcher, url: str, entries: list[FaqEntry]) -> None:
        cached = self._cache.pages.get(url, {})
        etag, modified = cached.get("etag"), cached.get("last_modified")
        try:
            page = fetcher.fetch(  # a page named directly is asked conditionally too
                url,
                etag=etag if isinstance(etag, str) else None,
                last_modified=modified if isinstance(modified, str) else None,
            )
        except PageGone as exc:
            self.report.skipped.append(Skipped(url, exc.reason))
            return
        except FetchFailed as exc:
            self._keep_previous(url, exc.reason, entries)
            return
        if page.body is not None and looks_like_sitemap(page.url, page.content_type, page.body):
            try:
                listed = fetcher.sitemap_urls(url, page.body)
            except DocumentError as exc:
                self._keep_previous(url, exc.reason, entries)
                return
            self._new_cache[url] = {"pages": listed}
            self._advance(0, len(listed))
            for page_url in listed:
                self._read_page(fetcher, page_url, entries)
                self._advance()
            return
        self._read_page(fetcher, url, entries, page)

    def _read_page(
        self,
        fetcher: WebFetcher,
        url: str,
        entries: list[FaqEntry],
        page: Page | None = None,
    ) -> None:
        cached = self._cache.pages.get(url, {})
        try:
            if page is None:
                etag, modified = cached.get("etag"), cached.get("last_modified")
                page = fetcher.fetch(
                    url,
                    etag=etag if isinstance(etag, str) else None,
                    last_modified=modified if isinstance(modified, str) else None,
                )
            if page.body is None:  # 304: what we imported last time still holds
                previous = self._cache.entries(url)
                self._new_cache[url] = cached
                self.report.documents += 1
                self.report.pages_unchanged += 1
                self.report.passages += len(previous)
                entries.extend(previous)
                return
            kind = CONTENT_TYPES.get(page.content_type)
            if kind is None and page.content_type:
                raise DocumentError(url, f"unsupported format {page.content_type!r}")
            kind = kind or Path(urlsplit(url).path).suffix
            document = read_document(url, page.body, kind or ".html", url=page.url)
        except PageGone as exc:
            self.report.skipped.append(Skipped(url, exc.reason))
            return
        except FetchFailed as exc:
            self._keep_previous(url, exc.reason, entries)
            return
        except DocumentError as exc:
            self.report.skipped.append(Skipped(url, exc.reason))
            return
        found = self._add(document, entries)
        self._new_cache[url] = {
            "etag": page.etag,
            "last_modified": page.last_modified,
            "entries": [entry.to_json() for entry in found],
        }

    def _keep_previous(self, url: str, reason: str, entries: list[FaqEntry]) -> None:
        """`url` failed this time: keep what it gave last time (a page's passages, or every
        page a sitemap listed), so an outage never empties the index."""
        cached = self._cache.pages.get(url, {})
        pages = cached.get("pages")
        urls = (
            [page for page in pages if isinstance(page, str)] if isinstance(pages, list) else [url]
        )
        previous = [entry for page in urls for entry in self._cache.entries(page)]
        if not previous:
            self.report.skipped.append(Skipped(url, reason))
            return
        self.report.kept.append(Skipped(url, reason))
        for page in [url, *urls]:
            if page in self._cache.pages:
                self._new_cache[page] = self._cache.pages[page]
        entries.extend(previous)


def collect(
    sources: Sequence[Source],
    options: IngestOptions | None = None,
    progress: Progress | None = None,
) -> tuple[list[FaqEntry], ImportReport]:
    """Every entry of every source, and what was read and skipped (see module doc)."""
    collector = Collector(options or IngestOptions(), progress)
    entries = collector.collect(sources)
    return entries, collector.report
