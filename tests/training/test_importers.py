"""Slack and Telegram Desktop export importers on small fixture exports."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bots.cli import main
from retrieval.evaluation import load_queries
from tests.hostile import ANY_TEXT, FUZZ
from training.importers import import_slack, import_telegram
from training.transcripts import TranscriptFormatError, read_conversations

FIXTURES = Path(__file__).parent.parent / "fixtures"


@pytest.fixture
def slack_zip(tmp_path: Path) -> Path:
    """The fixture folder zipped the way Slack's workspace export is laid out."""
    path = tmp_path / "Northwind Slack export Nov 1 2026 - Nov 30 2026.zip"
    source = FIXTURES / "slack_export"
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(source.rglob("*.json")):
            archive.write(file, file.relative_to(source).as_posix())
    return path


def test_slack_threads_become_conversations_with_roles_and_ratings(slack_zip: Path) -> None:
    conversations = import_slack(slack_zip)
    by_id = {c.meta["id"]: c for c in conversations}
    assert sorted(by_id) == [
        "slack:help:1793606400.000100",
        "slack:help:1793606700.000600",
        "slack:help:1793692900.000200",
        "slack:random:1793610000.000100",
    ]
    refunds = by_id["slack:help:1793606400.000100"]
    assert [(m.role, m.rating) for m in refunds.messages] == [
        ("user", ""),
        ("assistant", "up"),
        ("user", ""),
        ("agent", ""),
    ]
    assert (
        refunds.messages[3].content == "PayPal refunds usually show up within 2 working days, Jane."
    )
    assert refunds.meta["names"] == ["Jane Doe", "Omar Haddad"]
    assert refunds.meta["ratings"] == {"up": 1, "down": 0}
    # A reply in the next day's file joins its thread; a 👎 outweighs a 👍.
    norway = by_id["slack:help:1793606700.000600"]
    assert [(m.role, m.rating) for m in norway.messages] == [("user", ""), ("assistant", "down")]
    # Joins are not messages.
    assert all("has joined" not in m.content for c in conversations for m in c.messages)


def test_telegram_export_splits_chats_at_long_silences_and_assigns_roles() -> None:
    conversations = import_telegram(FIXTURES / "telegram_result.json")
    assert [c.meta["id"] for c in conversations] == [
        "telegram:5550001#1",
        "telegram:8880001#1",
        "telegram:5550001#2",
    ]
    first, bot_chat, second = conversations
    assert [m.role for m in first.messages] == ["user", "agent"]
    # Formatted text (entities) is flattened; service messages are skipped.
    assert (
        first.messages[1].content
        == "Hi Maria, yes: within 60 minutes, under My orders > Edit order."
    )
    assert [m.role for m in bot_chat.messages] == ["user", "assistant"]
    assert second.messages[0].content == "Another question: do gift cards expire?"
    assert "Maria Rossi" in first.meta["names"]


def test_import_command_writes_jsonl(
    slack_zip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "t.jsonl"
    assert (
        main(["transcripts", "import", str(slack_zip), "--format", "slack", "--out", str(out)]) == 0
    )
    assert len(read_conversations(out)) == 4
    telegram = tmp_path / "tg.jsonl"
    args = ["transcripts", "import", str(FIXTURES / "telegram_result.json")]
    assert main([*args, "--format", "telegram", "--out", str(telegram)]) == 0
    assert [m["role"] for m in read_conversations(telegram)[0].to_json()["messages"]] == [
        "user",
        "agent",
    ]


def test_bad_exports_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "result.json"
    bad.write_text('{"name": "x"}')
    with pytest.raises(TranscriptFormatError, match="not a Telegram Desktop export"):
        import_telegram(bad)
    with pytest.raises(TranscriptFormatError, match="not a Slack export zip"):
        import_slack(bad)


def _query_line(opening: str, query: str, answer: str | None) -> str:
    record: dict[str, object] = {
        "query": query,
        "relevant": ["shop-1"],
        "history": [
            {"role": "user", "content": opening},
            {"role": "agent", "content": "Sure, the Harbour shop is open today."},
        ],
    }
    if answer is not None:
        record["answer"] = answer
    return json.dumps(record)


def test_labelled_queries_become_conversations_and_held_out_dialogues_stay_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(tmp_path / "data"))
    queries = tmp_path / "queries.jsonl"
    lines = []
    for number in range(40):  # 40 dialogues of two turns each
        opening = f"Hello, I am looking for shop number {number}."
        lines.append(_query_line(opening, "Is there parking?", "Yes, free parking behind it."))
        lines.append(_query_line(opening, "And wifi?", "Guests say the wifi is fast."))
    lines.append(_query_line("Unanswered opening", "Anything?", None))
    queries.write_text("\n".join(lines) + "\n")
    out, held_file = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    args = ["transcripts", "import", str(queries), "--format", "queries", "--out", str(out)]
    assert main([*args, "--hold-out", "0.3", "--held-out-file", str(held_file)]) == 0

    conversations = read_conversations(out)
    held = load_queries(held_file)
    unanswered_held = sum(query.answer is None for query in held)  # skipped unless held out
    assert len(conversations) + len(held) == 80 + unanswered_held
    assert 10 <= len(held) <= 40  # about 30 % of 40 dialogues, two turns each
    first = conversations[0]
    assert [m.role for m in first.messages] == ["user", "assistant", "user", "agent"]
    assert first.messages[-1].content in {
        "Yes, free parking behind it.",
        "Guests say the wifi is fast.",
    }
    assert first.meta["relevant"] == ["shop-1"]
    trained = {m.content for c in conversations for m in c.messages if m.role == "user"}
    for query in held:  # no held-out dialogue was trained on, and lines come back intact
        assert query.history[0][1] not in trained
        assert query.history[1] == ("agent", "Sure, the Harbour shop is open today.")
    # The split is by dialogue and stable: both turns of a dialogue land on one side.
    openings = [q.history[0][1] for q in held if q.answer]
    assert all(openings.count(o) == 2 for o in openings)
    assert [q.query for q in load_queries(held_file)] == [q.query for q in held]


def test_queries_import_needs_a_file_for_the_held_out_part(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text(_query_line("Hi", "Parking?", "Yes.") + "\n")
    args = ["transcripts", "import", str(queries), "--format", "queries"]
    assert main([*args, "--out", str(tmp_path / "o.jsonl"), "--hold-out", "0.2"]) == 2
    assert "--hold-out needs --held-out-file" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "x", "relevant": [], "history": "nope"}\n')
    assert main([*args[:2], str(bad), *args[3:], "--out", str(tmp_path / "o.jsonl")]) == 2
    assert f"{bad}:1" in capsys.readouterr().err


# Fuzz: an export or conversations file of any shape is imported or refused with a
# TranscriptFormatError naming the file, never a traceback.

_VALUE = st.recursive(
    st.none() | st.integers() | st.floats(allow_nan=False) | ANY_TEXT,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "type", "text", "from", "from_id", "date_unixtime", "name"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)
_MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "id": _VALUE,
        "type": st.just("message") | _VALUE,
        "date_unixtime": st.just("1700000000") | _VALUE,
        "from": _VALUE,
        "from_id": st.just("user1") | _VALUE,
        "text": _VALUE,
        "role": st.sampled_from(["user", "agent"]) | _VALUE,
        "content": _VALUE,
    },
)
_EXPORTS = st.fixed_dictionaries(
    {"messages": st.lists(_MESSAGE, max_size=4) | _VALUE},
    optional={
        "type": st.sampled_from(["bot_chat", "personal_chat", "private_group"]) | _VALUE,
        "id": _VALUE,
        "chats": _VALUE,
    },
)


def imported_or_refused(read: Callable[[Path], object], path: Path) -> None:
    try:
        read(path)
    except TranscriptFormatError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(_EXPORTS | _VALUE)
def test_fuzz_telegram_exports(tmp_path_factory: pytest.TempPathFactory, export: Any) -> None:
    path = tmp_path_factory.mktemp("export") / "result.json"
    path.write_text(json.dumps(export), encoding="utf-8")
    imported_or_refused(import_telegram, path)


@FUZZ
@given(st.lists(_EXPORTS | _VALUE | st.just("[" * 50_000), max_size=3), st.binary(max_size=8))
def test_fuzz_conversation_files(tmp_path_factory: pytest.TempPathFactory, lines: list[Any],
                                 junk: bytes) -> None:  # fmt: skip
    path = tmp_path_factory.mktemp("conversations") / "t.jsonl"
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    path.write_bytes(text.encode("utf-8", errors="surrogatepass") + junk)
    imported_or_refused(read_conversations, path)
