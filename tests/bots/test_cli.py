"""The `deskmate` command line as users run it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bots.cli import main
from brain.settings import SAMPLE_FAQ

FAQ = (
    '{"id": "ship", "question": "How long does shipping take?", "answer": "3-5 days.",'
    ' "alternates": ["delivery time"]}\n'
    '{"id": "pay", "question": "Which payment methods do you accept?", "answer": "Cards."}\n'
    '{"id": "care", "question": "What does the NW-CARE plan cover?", "answer": "Repairs."}\n'
)
QUERIES = (
    '{"query": "how many days until my order arrives", "relevant": ["ship"]}\n'
    '{"query": "can I pay with a credit card", "relevant": ["pay"]}\n'
    '{"query": "NW-CARE coverage", "relevant": ["care"]}\n'
    '{"query": "what is the capital of peru", "relevant": []}\n'
    '{"query": "tell me a joke about cats", "relevant": []}\n'
)


@pytest.fixture
def env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(data_dir))
    for name in list(os.environ):
        if name.startswith("DESKMATE_") and name != "DESKMATE_DATA_DIR":
            monkeypatch.delenv(name)
    # The CLI under test, answering by quoting; the shipped default model has its own
    # test (tests/brain/answering/test_real_model.py).
    monkeypatch.setenv("DESKMATE_MODEL_BACKEND", "quote")
    # Nor do they learn the FAQ (minutes of fine-tuning); the test of learning turns it on.
    monkeypatch.setenv("DESKMATE_FAQ_LEARN", "false")
    return data_dir


def files(tmp_path: Path) -> tuple[Path, Path]:
    faq, queries = tmp_path / "faq.jsonl", tmp_path / "queries.jsonl"
    faq.write_text(FAQ)
    queries.write_text(QUERIES)
    return faq, queries


def test_import_search_and_calibrate(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq, queries = files(tmp_path)
    assert main(["faq", "import", str(faq)]) == 0
    assert "Built index of 3 entries (4 phrasings)" in capsys.readouterr().out
    assert main(["faq", "import", str(faq), "--calibrate", str(queries)]) == 0
    out = capsys.readouterr().out
    # Five labelled queries are too few to calibrate on: conservative defaults, said so.
    assert "Unchanged:" in out and "too few labelled queries to calibrate" in out
    assert "(defaults, uncalibrated)" in out
    assert main(["faq", "search", "when will my delivery arrive", "-k", "2"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip().startswith(("1 ", "2 "))]
    assert "ship" in lines[0]
    assert "Policy: clarify (best fused score 0.586)" in out  # conservative defaults


def test_eval_retrieval_json_follows_the_contract(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq, queries = files(tmp_path)
    code = main(["eval", "retrieval", "--faq", str(faq), "--queries", str(queries), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {
        "n", "recall@1", "recall@5", "mrr", "oos_precision", "oos_recall", "oos_f1",
        "p50_ms", "p95_ms",
    }  # fmt: skip
    assert result["n"] == 5
    assert result["recall@1"] == 1.0


def test_eval_answers_end_to_end_through_the_brain(
    env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    faq, _ = files(tmp_path)
    queries = tmp_path / "answers.jsonl"
    queries.write_text(
        '{"query": "how many days until my order arrives", "relevant": ["ship"],'
        ' "answer": "3-5 days."}\n'
        '{"query": "can I pay with a credit card", "relevant": ["pay"], "answer": "Cards."}\n'
        '{"query": "what is the capital of peru", "relevant": []}\n'
    )
    monkeypatch.setenv("DESKMATE_MODEL_BACKEND", "quote")
    monkeypatch.setenv("DESKMATE_ANSWER_THRESHOLD", "0.3")
    monkeypatch.setenv("DESKMATE_CLARIFY_THRESHOLD", "0.25")
    args = ["eval", "answers", "--faq", str(faq), "--queries", str(queries)]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 3
    assert result["answered"] == pytest.approx(2 / 3)
    assert result["token_f1"] == 1.0  # quoting returns the reference answer itself
    assert result["citation_accuracy"] == 1.0
    assert result["handoff_in_scope"] == 0.0 and result["oos_answered"] == 0.0
    assert result["answered_by"] == {"quote": 1.0} and result["with_reference"] == 2
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "answer token-F1" in out
    assert "answers written by (share of the answers):\n    100.0%  quote" in out
    # Labelled for retrieval only (no reference answers): the wording is not scored as 0.
    queries.write_text('{"query": "can I pay with a credit card", "relevant": ["pay"]}\n')
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"answer token-F1 +n/a", out) and "need one" in out


def test_eval_retrieval_table_and_calibration(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq, queries = files(tmp_path)
    assert main(["faq", "import", str(faq)]) == 0
    assert main(["eval", "retrieval", "--queries", str(queries), "--calibrate"]) == 0
    out = capsys.readouterr().out
    assert "recall@1" in out and "out-of-scope F1" in out
    assert "with the stored thresholds (too few labelled queries" in out
    meta = json.loads((env / "index" / "meta.json").read_text())
    assert meta["thresholds"]["calibrated_from"] is None
    assert "too few labelled queries" in meta["thresholds"]["note"]


def test_bad_input_is_a_clear_error_and_imports_nothing(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq, _ = files(tmp_path)
    assert main(["faq", "import", str(faq)]) == 0
    broken = tmp_path / "broken.jsonl"
    broken.write_text(FAQ + '{"question": "half a line"\n')
    assert main(["faq", "import", str(broken)]) == 2
    assert f"{broken}:4: invalid JSON" in capsys.readouterr().err
    meta = json.loads((env / "index" / "meta.json").read_text())
    assert len(meta["entries"]) == 3  # the previous index is untouched


def test_broken_setting_is_named(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DESKMATE_TOP_K", "lots")
    assert main(["config"]) == 2
    assert "DESKMATE_TOP_K must be a positive integer" in capsys.readouterr().err


def test_config_lists_every_variable(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    expected = [
        "DESKMATE_DATA_DIR",
        "DESKMATE_REDIS_URL",
        "DESKMATE_MODEL_BACKEND",
        "DESKMATE_TELEGRAM_TOKEN",
        "DESKMATE_SLACK_SIGNING_SECRET",
        "DESKMATE_HTTP_ADDR",
    ]
    for name in expected:
        assert name in out


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "deskmate faq import" in out


def test_chat_first_run_on_a_fresh_data_dir(env: Path) -> None:
    """What `make chat` does: the sample FAQ, an embedded Redis, a conversation, a clean exit."""
    lines = [
        b"how long do I have to return something?",
        b"/human",
        b"anyone there?",  # held for a person who is not connected
        b"/reset",
        b"\xff\xfe not UTF-8 \xed\xa0\xbd",  # bytes from elsewhere, half an emoji
        b"/quit",
    ]
    completed = subprocess.run(
        [sys.executable, "-m", "bots.cli", "chat"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=180,
        env={**os.environ, "DESKMATE_DATA_DIR": str(env), "PYTHONIOENCODING": "utf-8"},
    )
    result = subprocess.CompletedProcess(
        completed.args,
        completed.returncode,
        completed.stdout.decode("utf-8", errors="replace"),
        completed.stderr.decode("utf-8", errors="replace"),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "something went wrong" not in result.stdout
    assert "loading the sample FAQ" in result.stderr
    assert (
        "30 days" in result.stdout and "[1] How long do I have to return an item?" in result.stdout
    )
    # The console reaches no staff channel: no person is promised, and no log line
    # interrupts the chat at start.
    assert "no person will reply" in result.stdout
    assert "no one from the support team is connected to this chat" in result.stdout
    assert "support team has this conversation" not in result.stdout
    assert "they'll reply" not in result.stdout and "passing you to" not in result.stdout
    assert "WARNING" not in result.stderr, result.stderr
    assert "Chatting with deskmate (answering with " in result.stdout
    assert result.stdout.rstrip().endswith("Bye!")
    meta = json.loads((env / "index" / "meta.json").read_text())
    assert meta["sources"] == [str(SAMPLE_FAQ)]
    # The sample's labelled queries hold 60 out of scope: too few, conservative defaults.
    assert meta["thresholds"]["calibrated_from"] is None
    assert "too few labelled queries" in meta["thresholds"]["note"]
    redis_files = {p.name for p in (env / "redis").iterdir()}
    assert redis_files & {"appendonly.aof", "appendonlydir"}, redis_files  # AOF on
    assert not (env / "redis" / "redis.sock").exists()  # the server was stopped on exit


LEARNABLE = [
    (
        "ship",
        "How long does delivery take?",
        [
            "when will my order come",
            "how many days to deliver",
            "is shipping fast",
            "delivery time to Norway",
            "when does the courier arrive",
        ],
    ),
    (
        "refund",
        "How do I get a refund?",
        [
            "money back please",
            "I want my money returned",
            "refund my order",
            "can I be reimbursed",
            "how do refunds work",
        ],
    ),
    (
        "size",
        "What size should I buy?",
        [
            "does a medium fit me",
            "size chart for jackets",
            "which size for boots",
            "do your sizes run small",
            "help me choose a size",
        ],
    ),
    (
        "store",
        "Where are your shops?",
        [
            "any shop near me",
            "store opening hours",
            "can I visit a store",
            "shop addresses",
            "is there a store in Oslo",
        ],
    ),
    (
        "pay",
        "Which payment methods do you accept?",
        [
            "can I pay by card",
            "do you take paypal",
            "payment options",
            "pay with klarna",
            "is apple pay accepted",
        ],
    ),
]


@pytest.mark.slow
def test_import_learns_the_faq_and_eval_measures_it_without_learning_the_queries(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DESKMATE_FAQ_LEARN", "true")
    faq = tmp_path / "learnable.jsonl"
    faq.write_text(
        "".join(
            json.dumps({"id": i, "question": q, "answer": "See our help pages.", "alternates": a})
            + "\n"
            for i, q, a in LEARNABLE
        )
    )
    assert main(["faq", "import", str(faq)]) == 0
    out = capsys.readouterr().out
    assert "Learning: " in out and "held-out phrasings (5)" in out
    meta = json.loads((env / "index" / "meta.json").read_text())
    learned = sorted(p.name for p in (env / "learned-embedders").iterdir())
    assert len(learned) == 1
    if "learned model kept" in out:  # the index is embedded by what serves
        assert meta["model"] == learned[0] and "Serving retrieval model v1" in out
        assert (env / "retrievers" / "v1" / "adapter").is_dir()
    else:
        assert meta["model"] == "sentence-transformers/all-MiniLM-L6-v2"
    # Evaluating learns the same FAQ (the cached model), never the evaluated queries.
    for text in ("when will the parcel come", "can I get my money back"):
        queries = tmp_path / "q.jsonl"
        queries.write_text(json.dumps({"query": text, "relevant": ["ship"]}) + "\n")
        assert (
            main(["eval", "retrieval", "--faq", str(faq), "--queries", str(queries), "--json"]) == 0
        )
        assert json.loads(capsys.readouterr().out)["n"] == 1
    assert sorted(p.name for p in (env / "learned-embedders").iterdir()) == learned


@pytest.mark.slow
def test_faq_learn_takes_the_questions_customers_and_agents_resolved_from_transcripts(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    faq = tmp_path / "learnable.jsonl"
    faq.write_text(
        "".join(
            json.dumps({"id": i, "question": q, "answer": f"Answer about {q}", "alternates": a})
            + "\n"
            for i, q, a in LEARNABLE
        )
    )
    assert main(["faq", "import", "--no-learn", str(faq)]) == 0
    conversations = [
        [
            {"role": "user", "content": "parcel still not here after a week"},
            {
                "role": "assistant",
                "content": "Did you mean ...",
                "action": "clarify",
                "sources": ["refund", "ship"],
            },
            {"role": "user", "content": "2"},
        ],
        [
            {"role": "user", "content": "can I try jackets on in Bergen"},
            {"role": "agent", "content": "Answer about Where are your shops?"},
        ],
    ]
    transcripts = tmp_path / "t.jsonl"
    transcripts.write_text(
        "".join(json.dumps({"messages": m, "meta": {}}) + "\n" for m in conversations)
    )
    assert main(["faq", "learn", "--transcripts", str(transcripts)]) == 0
    out = capsys.readouterr().out
    assert f"{transcripts}: 2 phrasings of FAQ entries (1 agent answer, 1 clarify choice)" in out
    assert "Learning: " in out
