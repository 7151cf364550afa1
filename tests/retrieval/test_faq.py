"""FAQ loaders: every format, and malformed input reported as file:line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brain.settings import SAMPLE_FAQ
from retrieval.faq import FaqFormatError, load_faq, load_faq_file, stable_id
from tests.hostile import ANY_TEXT, FUZZ


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


# Fuzz: whatever a FAQ file holds, it loads into entries whose text can be saved and
# embedded (UTF-8 encodable), or stops with FaqFormatError naming the file; nothing else.

_JSON_VALUE = st.recursive(
    st.none() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=6,
)
_RECORDS = st.dictionaries(
    st.sampled_from(["id", "question", "answer", "alternates", "url"]), _JSON_VALUE
)
_DEEP = "[" * 100_000 + "]" * 100_000


def loads_or_reports(path: Path) -> None:
    try:
        entries = load_faq_file(path)
    except FaqFormatError as exc:
        assert str(path) in str(exc)
        return
    for entry in entries:
        for text in (entry.id, entry.question, entry.answer, *entry.alternates, entry.url or ""):
            text.encode("utf-8")


@FUZZ
@given(st.lists(_RECORDS | st.just(_DEEP) | ANY_TEXT, max_size=4), st.binary(max_size=40))
def test_fuzz_jsonl_files(tmp_path_factory: pytest.TempPathFactory, lines: list[Any],
                          junk: bytes) -> None:  # fmt: skip
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines)
    path = tmp_path_factory.mktemp("faq") / "faq.jsonl"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") + junk)
    loads_or_reports(path)


@FUZZ
@given(ANY_TEXT, st.sampled_from([".csv", ".md"]), st.binary(max_size=20))
def test_fuzz_csv_and_markdown_files(tmp_path_factory: pytest.TempPathFactory, text: str,
                                     suffix: str, junk: bytes) -> None:  # fmt: skip
    head = "question,answer\n" if suffix == ".csv" else "## "
    path = tmp_path_factory.mktemp("faq") / f"faq{suffix}"
    path.write_bytes((head + text).encode("utf-8", errors="surrogatepass") + junk)
    loads_or_reports(path)


def test_a_csv_cell_over_the_csv_limit_is_reported(tmp_path: Path) -> None:
    path = write(tmp_path, "big.csv", "question,answer\nq," + "a" * 200_000 + "\n")
    with pytest.raises(FaqFormatError, match=r"big\.csv"):
        load_faq_file(path)
