"""Reading each format into sections, and every kind of bad file reported by name."""

from __future__ import annotations

import io
from pathlib import Path

import docx
import pytest
from pypdf import PdfWriter

from retrieval.knowledge.document import DocumentError
from retrieval.knowledge.formats import markdown_sections, read_document
from retrieval.knowledge.sources import IngestOptions, collect, markdown_is_faq


def text_pdf(pages: list[str]) -> bytes:
    """A PDF with a text layer (Helvetica), one page per item; '' gives a page with no text."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    kids = []
    font = 3
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for text in pages:
        lines = b" ".join(
            b"(" + line.encode("latin-1") + b") Tj 0 -14 Td" for line in text.splitlines()
        )
        stream = b"BT /F1 11 Tf 50 750 Td " + lines + b" ET"
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        content = len(objects)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 %d 0 R >> >> >>" % (content, font)
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.writelines(b"%010d 00000 n \n" % offset for offset in offsets)
    out.write(
        b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    )
    return out.getvalue()


def test_markdown_is_split_along_headings_with_paths_and_anchors() -> None:
    title, sections = markdown_sections(
        "# Returns\nIntro text here.\n## Damaged items {#broken}\nTell us.\n### Glass\n"
        "Photograph it.\n```\n# not a heading\n```\n## Refunds\nFive days.\n"
    )
    assert title == "Returns"
    assert [(s.path, s.anchor) for s in sections] == [
        ((), ""),
        (("Damaged items",), "broken"),
        (("Damaged items", "Glass"), "glass"),
        (("Refunds",), "refunds"),
    ]
    assert "# not a heading" in sections[2].text


def test_faq_markdown_stays_faq_and_articles_are_documents() -> None:
    assert markdown_is_faq("## How do I return an item?\nUse the portal.\n")
    assert markdown_is_faq("# FAQ\n## Returns {#returns}\nUse the portal.\n")
    # A titled FAQ file whose headings are all questions was a FAQ file before documents.
    assert markdown_is_faq("# Shop FAQ\n## How do I return?\nPortal.\n## Is it free?\nYes.\n")
    assert not markdown_is_faq("# Policy\n## Can I return?\nYes.\n## Damaged items\nTell us.\n")
    assert markdown_is_faq("# FAQ\n## Returns\nAlso: send back\nUse the portal.\n")
    assert not markdown_is_faq("# Returns policy\n## Damaged items\nTell us.\n")
    assert not markdown_is_faq("---\ntitle: Returns\n---\n## Damaged items\nTell us.\n")
    assert not markdown_is_faq("Opening hours: 9 to 5 on weekdays.\n")


def test_a_text_pdf_is_read_and_a_page_without_text_is_named() -> None:
    data = text_pdf(["Warranty terms\nThe pump is covered for two years.", ""])
    document = read_document("policies.pdf", data, ".pdf")
    assert "pump is covered" in document.sections[0].text
    assert document.sections[0].anchor == "page=1"
    assert document.notes == ("page 2 has no text layer (scanned?), skipped",)


def test_scanned_and_password_protected_pdfs_are_refused_with_a_reason() -> None:
    blank = PdfWriter()
    blank.add_blank_page(612, 792)
    scanned = io.BytesIO()
    blank.write(scanned)
    with pytest.raises(DocumentError, match="no text layer on any of its 1 page"):
        read_document("scan.pdf", scanned.getvalue(), ".pdf")
    blank.encrypt("secret")
    locked = io.BytesIO()
    blank.write(locked)
    with pytest.raises(DocumentError, match="password-protected"):
        read_document("locked.pdf", locked.getvalue(), ".pdf")


def test_docx_headings_become_sections() -> None:
    document = docx.Document()
    document.add_heading("Travel policy", level=0)
    document.add_paragraph("Staff book trains for trips under 600 km.")
    document.add_heading("Hotels", level=1)
    document.add_paragraph("Hotels up to 150 euros a night are approved automatically.")
    buffer = io.BytesIO()
    document.save(buffer)
    read = read_document("travel.docx", buffer.getvalue(), ".docx")
    assert read.title == "Travel policy"
    assert [s.path for s in read.sections] == [(), ("Hotels",)]
    assert "150 euros" in read.sections[1].text


def test_a_folder_with_bad_files_reports_each_and_imports_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "help-center"
    folder.mkdir()
    (folder / "returns.md").write_text("# Returns\n## Damaged items\nSend us a photo of it.\n")
    (folder / "faq.jsonl").write_text(
        '{"id": "hours", "question": "When are you open?", "answer": "9-5."}\n'
    )
    (folder / "latin1.txt").write_bytes("Caf\xe9 opening hours".encode("latin-1"))
    (folder / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0" + b"\x00" * 100)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 this is not really a pdf")
    (folder / "huge.txt").write_bytes(b"word " * 300_000)
    (folder / "photo.png").write_bytes(b"\x89PNG")
    entries, report = collect([folder], IngestOptions(max_bytes=1_000_000))
    assert {e.id for e in entries if not e.document} == {"hours"}
    assert [e.title for e in entries if e.document] == ["Returns › Damaged items"]
    reasons = {Path(s.name).name: s.reason for s in report.skipped}
    assert "not valid UTF-8" in reasons["latin1.txt"]
    assert "password-protected" in reasons["locked.docx"]
    assert "not a readable PDF" in reasons["broken.pdf"]
    assert "MB cap" in reasons["huge.txt"]
    assert "unsupported format" in reasons["photo.png"]
    assert "skipped 5" in report.render()
