"""FAQ loaders: every format, and malformed input reported as file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from brain.settings import SAMPLE_FAQ
from retrieval.faq import FaqFormatError, load_faq, load_faq_file, stable_id


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_sample_faq_is_a_believable_faq() -> None:
    entries = load_faq([SAMPLE_FAQ])
    assert len(entries) >= 40
    assert all(len(e.alternates) >= 2 and e.answer for e in entries)


def test_jsonl_entries_with_alternates_and_url(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "faq.jsonl",
        '{"id": "a", "question": "Q1?", "answer": "A1", "alternates": ["q one"], '
        '"url": "https://x.example/a"}\n\n'
        '{"question": "Q2?", "answer": "A2"}\n',
    )
    first, second = load_faq_file(path)
    assert (first.id, first.alternates, first.url) == ("a", ("q one",), "https://x.example/a")
    assert first.phrasings == ("Q1?", "q one")
    assert second.id == stable_id("Q2?")  # stable: derived from the question


def test_csv_with_pipe_separated_alternates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "faq.csv",
        'Question,Answer,Alternates\n"How, exactly?","Like this.","how|exactly how"\n',
    )
    (entry,) = load_faq_file(path)
    assert entry.question == "How, exactly?"
    assert entry.alternates == ("how", "exactly how")


def test_markdown_headings_alternates_and_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "faq.md",
        "# Help centre\nIntro text.\n\n"
        "## How do I return an item? {#returns}\n"
        "Also: send it back\nAlso: return policy\n\n"
        "Use the returns portal.\n\nIt is free.\n"
        "## Where is my order?\nTrack it in your account.\n",
    )
    first, second = load_faq_file(path)
    assert first.id == "returns"
    assert first.alternates == ("send it back", "return policy")
    assert first.answer == "Use the returns portal.\n\nIt is free."
    assert second.question == "Where is my order?"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.jsonl", '{"question": "Q", "answer": "A"}\n{"question": "Q2",\n', "bad.jsonl:2"),
        ("bad.jsonl", '{"question": "Q", "answer": "A"}\n["a list"]\n', "bad.jsonl:2"),
        ("bad.jsonl", '{"answer": "A"}\n', "bad.jsonl:1: field 'question'"),
        ("bad.jsonl", '{"question": "Q", "alternates": "x", "answer": 3.5}\n', "bad.jsonl:1"),
        ("bad.csv", "question,text\nQ,A\n", "bad.csv:1: header"),
        ("bad.csv", "question,answer\nQ,A,extra\n", "bad.csv:2"),
        ("bad.jsonl", b'{"question": "Q", "answer": "A"}\n\xff\xfe\x00binary', "bad.jsonl:2"),
        ("empty.jsonl", "", "no FAQ entries"),
        ("faq.txt", "Q: A", "unknown FAQ format"),
    ],
)
def test_malformed_files_name_file_and_line(
    tmp_path: Path, name: str, content: str | bytes, expected: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(FaqFormatError) as error:
        load_faq([path])
    assert expected in str(error.value)


def test_duplicate_ids_across_files_are_rejected(tmp_path: Path) -> None:
    one = write(tmp_path, "one.jsonl", '{"id": "x", "question": "Q", "answer": "A"}\n')
    two = write(tmp_path, "two.jsonl", '{"id": "y", "question": "P", "answer": "B"}\n'
                '{"id": "x", "question": "R", "answer": "C"}\n')  # fmt: skip
    with pytest.raises(FaqFormatError) as error:
        load_faq([one, two])
    assert "two.jsonl:2" in str(error.value)
    assert "duplicate FAQ id 'x'" in str(error.value)
    assert "one.jsonl:1" in str(error.value)


def test_huge_field_is_rejected_with_its_size(tmp_path: Path) -> None:
    path = write(tmp_path, "big.jsonl", '{"question": "Q", "answer": "' + "a" * 30_000 + '"}\n')
    with pytest.raises(FaqFormatError, match="30000 characters"):
        load_faq([path])
