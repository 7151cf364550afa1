"""Reading documents of every supported format into sections.

HTML goes through trafilatura (main content only: navigation, footers, cookie banners
dropped) and then, like Markdown, is split at its headings; PDF through pypdf (page by
page, grouped by the PDF's outline when it has one); .docx through python-docx (its
Heading styles); plain text is one section. Errors name the document and a reason.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Callable, Iterator
from pathlib import PurePosixPath

from retrieval.knowledge.document import Document, DocumentError, Section, slug

MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
DOCUMENT_SUFFIXES = (*MARKDOWN_SUFFIXES, *HTML_SUFFIXES, ".pdf", ".docx", ".txt", ".text")
MIN_PAGE_CHARS = 20  # a PDF page with less text than this has no usable text layer
LOGIN_WALL_MAX_WORDS = 120  # a page this short with a password field is a login form
_OLE_MAGIC = b"\xd0\xcf\x11\xe0"  # encrypted Office files (and old .doc) are OLE containers
_ATX = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXPLICIT_ANCHOR = re.compile(r"\s*\{#([\w.-]+)\}\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.DOTALL)
# trafilatura and pypdf log parse trouble with fragments of the document; documents may
# hold customers' data, and every problem is reported by name through DocumentError.
logging.getLogger("trafilatura").setLevel(logging.CRITICAL)
logging.getLogger("pypdf").setLevel(logging.CRITICAL)


def decode_text(name: str, data: bytes) -> str:
    """UTF-8 text (a BOM is fine); anything else is reported, not guessed at."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DocumentError(name, f"not valid UTF-8 text (line {line}); save it as UTF-8") from exc


def _front_matter(text: str) -> tuple[dict[str, str], str]:
    """`key: value` lines between `---` fences at the top (Jekyll/Hugo exports): title, url."""
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    fields = {}
    for line in match[1].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip().lower()] = value.strip().strip("\"'")
    return fields, text[match.end() :]


def markdown_sections(
    text: str, anchors: Callable[[str], str] | None = None
) -> tuple[str | None, tuple[Section, ...]]:
    """(the H1 title if any, the sections below it). Headings in code fences are text."""
    title: str | None = None
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    path: tuple[str, ...] = ()
    anchor = ""
    body: list[str] = []
    fenced = False

    def close() -> None:
        content = "\n".join(body).strip()
        if content:
            sections.append(Section(path, content, anchor))

    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _ATX.match(line)
        if match is None:
            body.append(line)
            continue
        level, heading = len(match[1]), match[2].strip()
        explicit = _EXPLICIT_ANCHOR.search(heading)
        if explicit:
            heading = heading[: explicit.start()].strip()
        if not heading:
            continue
        close()
        body = []
        if level == 1 and title is None and not sections and not stack:
            title, path, anchor = heading, (), ""
            continue
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        path = tuple(name for _, name in stack)
        if explicit:
            anchor = explicit[1]
        else:
            anchor = anchors(heading) if anchors else ""
            anchor = anchor or slug(heading)
    close()
    return title, tuple(sections)


def read_markdown(key: str, data: bytes, fallback_title: str, url: str | None) -> Document:
    meta, text = _front_matter(decode_text(key, data))
    h1, sections = markdown_sections(text)
    if not sections:
        raise DocumentError(key, "no text found")
    title = meta.get("title") or h1 or fallback_title
    return Document(key, title, sections, url=meta.get("url") or url)


def read_text(key: str, data: bytes, fallback_title: str, url: str | None) -> Document:
    text = decode_text(key, data).strip()
    if not text:
        raise DocumentError(key, "no text found")
    return Document(key, fallback_title, (Section((), text),), url=url)


def _html_anchors(tree: object) -> dict[str, str]:
    """Heading text (normalised) -> its id in the page, so citations link to the section."""
    anchors: dict[str, str] = {}
    for heading in tree.iter("h1", "h2", "h3", "h4", "h5", "h6"):  # type: ignore[attr-defined]
        text = " ".join(heading.text_content().split()).lower()
        ident = heading.get("id")
        if not ident:  # <h2><a id="x"></a>Title</h2>, an older convention
            for inner in heading.iter("a"):
                ident = inner.get("id") or inner.get("name")
                if ident:
                    break
        if text and ident and text not in anchors:
            anchors[text] = ident
    return anchors


def read_html(key: str, data: bytes, fallback_title: str, url: str | None) -> Document:
    import lxml.html
    import trafilatura

    try:
        tree = lxml.html.fromstring(data)
    except (ValueError, lxml.etree.ParserError) as exc:
        raise DocumentError(key, f"not readable HTML ({exc})") from exc
    markdown = trafilatura.extract(
        data,
        output_format="markdown",
        include_formatting=True,
        include_links=False,
        include_comments=False,
        include_images=False,
        favor_recall=True,
    )
    words = len((markdown or "").split())
    if tree.xpath("//input[@type='password']") and words < LOGIN_WALL_MAX_WORDS:
        raise DocumentError(key, "looks like a login page, not an article (login wall?)")
    if not markdown or not markdown.strip():
        raise DocumentError(key, "no main content found in the page")
    anchors = _html_anchors(tree)
    h1, sections = markdown_sections(
        markdown, lambda heading: anchors.get(" ".join(heading.split()).lower(), "")
    )
    metadata = trafilatura.extract_metadata(data)
    title = h1 or (metadata.title if metadata and metadata.title else None) or fallback_title
    canonical = tree.xpath("//link[@rel='canonical']/@href")
    link = url or (str(canonical[0]) if canonical else None)
    return Document(key, title, sections, url=link)


def read_pdf(key: str, data: bytes, fallback_title: str, url: str | None) -> Document:
    from pypdf import PdfReader
    from pypdf.errors import FileNotDecryptedError, PdfReadError, PdfStreamError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise DocumentError(key, "password-protected PDF; export an unprotected copy")
        pages = [page.extract_text() or "" for page in reader.pages]
    except DocumentError:
        raise
    except FileNotDecryptedError as exc:
        raise DocumentError(key, "password-protected PDF; export an unprotected copy") from exc
    except (PdfReadError, PdfStreamError, ValueError, KeyError, OSError) as exc:
        raise DocumentError(key, f"not a readable PDF ({type(exc).__name__})") from exc
    empty = [number for number, text in enumerate(pages, 1) if len(text.strip()) < MIN_PAGE_CHARS]
    if len(empty) == len(pages):
        raise DocumentError(
            key,
            f"no text layer on any of its {len(pages)} page(s) (a scanned PDF? run OCR first)",
        )
    notes = tuple(f"page {n} has no text layer (scanned?), skipped" for n in empty)
    chapters = _pdf_chapters(reader)
    sections = []
    for number, text in enumerate(pages, 1):
        if number in empty:
            continue
        chapter = chapters.get(number)
        path = (chapter,) if chapter else (f"page {number}",)
        sections.append(Section(path, _unwrap(text), f"page={number}"))
    metadata = reader.metadata
    title = (metadata.title if metadata and metadata.title else None) or fallback_title
    return Document(key, str(title), tuple(sections), url=url, notes=notes)


def _pdf_chapters(reader: object) -> dict[int, str]:
    """Page number -> the outline (bookmark) title that page falls under, if the PDF has one."""
    starts: list[tuple[int, str]] = []

    def walk(items: object) -> Iterator[object]:
        for item in items if isinstance(items, list) else []:
            if isinstance(item, list):
                yield from walk(item)
            else:
                yield item

    try:
        for item in walk(reader.outline):  # type: ignore[attr-defined]
            page = reader.get_destination_page_number(item) + 1  # type: ignore[attr-defined]
            starts.append((page, str(item.title).strip()))  # type: ignore[attr-defined]
        total = len(reader.pages)  # type: ignore[attr-defined]
    except Exception:  # a malformed outline only costs the chapter names
        return {}
    if not starts:
        return {}
    starts.sort()
    chapters: dict[int, str] = {}
    for (first, title), following in zip(starts, [*starts[1:], (total + 1, "")], strict=True):
        for page in range(first, max(first + 1, following[0])):
            chapters.setdefault(page, title)
    return chapters


def _unwrap(text: str) -> str:
    """PDF text breaks lines at the page width: keep paragraph breaks, join the rest."""
    paragraphs = re.split(r"\n\s*\n", text)
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def read_docx(key: str, data: bytes, fallback_title: str, url: str | None) -> Document:
    if data.startswith(_OLE_MAGIC):
        raise DocumentError(
            key, "password-protected (encrypted) or old-format Word file; save it as .docx"
        )
    import docx
    from docx.opc.exceptions import PackageNotFoundError

    try:
        document = docx.Document(io.BytesIO(data))
    except (PackageNotFoundError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise DocumentError(key, f"not a readable .docx ({type(exc).__name__})") from exc
    lines: list[str] = []
    title: str | None = None
    for block in document.iter_inner_content():
        if isinstance(block, docx.table.Table):
            for row in block.rows:
                cells = dict.fromkeys(cell.text.strip() for cell in row.cells if cell.text.strip())
                if cells:
                    lines.extend([" | ".join(cells), ""])
            continue
        text = block.text.strip()
        style = (block.style.name if block.style is not None else "") or ""
        if not text:
            continue
        if style == "Title" and title is None:
            title = text
        elif style.startswith("Heading") and style[8:].strip().isdigit():
            lines.extend(["#" * min(6, int(style[8:].strip()) + 1) + " " + text, ""])
        else:
            lines.extend([text, ""])
    _, sections = markdown_sections("\n".join(lines))
    if not sections:
        raise DocumentError(key, "no text found")
    core_title = document.core_properties.title
    return Document(key, title or core_title or fallback_title, sections, url=url)


Reader = Callable[[str, bytes, str, str | None], Document]
READERS: dict[str, Reader] = {
    **dict.fromkeys(MARKDOWN_SUFFIXES, read_markdown),
    **dict.fromkeys(HTML_SUFFIXES, read_html),
    ".pdf": read_pdf,
    ".docx": read_docx,
    ".txt": read_text,
    ".text": read_text,
}
CONTENT_TYPES = {
    "text/html": ".html",
    "application/xhtml+xml": ".html",
    "text/markdown": ".md",
    "text/x-markdown": ".md",
    "text/plain": ".txt",
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}


def read_document(key: str, data: bytes, kind: str, url: str | None = None) -> Document:
    """Read `data` as `kind` (a file suffix like ".pdf"); `key` names it in errors."""
    reader = READERS.get(kind.lower())
    if reader is None:
        raise DocumentError(key, f"unsupported format {kind!r}")
    stem = PurePosixPath(key.split("?")[0].rstrip("/")).stem or key
    fallback = stem.replace("-", " ").replace("_", " ").strip().capitalize() or key
    return reader(key, data, fallback, url)
