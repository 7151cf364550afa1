"""The `deskmate` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from bots.logs import setup_logging
from brain.answering.registry import RegistryError
from brain.redis_server import RedisUnavailable
from brain.settings import Settings, SettingsError
from retrieval.embedder import EmbeddingModelError
from retrieval.evaluation import CalibrationError
from retrieval.faq import FaqFormatError
from retrieval.index import IndexLoadError
from retrieval.knowledge.sources import as_source
from training import cli as training_cli
from training.transcripts import TranscriptFormatError

DESCRIPTION = """\
deskmate - an open customer-support bot.

It answers questions from your FAQ (sentence embeddings + FAISS + BM25), hands
conversations it cannot answer to a human, and keeps conversation state in Redis.
"""

EPILOG = """\
examples:
  deskmate chat                                  chat in the terminal (sample FAQ on first run)
  deskmate faq import help/faq.jsonl extra.md   build the index from your FAQ files
  deskmate faq import help-center/ policies.pdf https://help.example.com/sitemap.xml
  deskmate faq sync                              re-read every source now; processes follow
  deskmate faq search "where is my parcel"      see ranked entries with their scores
  deskmate faq learn --queries labelled.jsonl   fine-tune the embedder on the FAQ, serve it
  deskmate faq learn --transcripts t.jsonl    ... and on questions customers and agents resolved
  deskmate faq model list | promote v2 | rollback   retrieval model versions
  deskmate eval retrieval --faq faq.jsonl --queries labelled.jsonl
  deskmate eval retrieval --queries labelled.jsonl --calibrate   fit answer thresholds
  deskmate eval answers --faq faq.jsonl --queries labelled.jsonl  answer quality end to end
  deskmate serve --workers 4                     run the channels, workers and senders
  deskmate status                                queues, pending work, live processes
  deskmate report --since 2026-11-01 --json      conversations, resolution, ratings, handoffs
  deskmate transcripts export --since 2026-11-01 --out t.jsonl   conversations for training
  deskmate train t.jsonl --epochs 2              fine-tune, evaluate, register a version
  deskmate model promote v3                      serve v3 everywhere (model rollback undoes)
  deskmate classifier train emotion.jsonl --dev dev.jsonl --neutral faq.jsonl   mood classifier
  deskmate classifier eval dev.jsonl --json      per-label precision/recall/F1, macro-F1
  deskmate config                                show the effective settings
  deskmate forget --channel telegram --user 123  erase a customer's data (GDPR request)

configuration: DESKMATE_* environment variables (see `deskmate config`), optionally
a TOML file named by DESKMATE_CONFIG. With no DESKMATE_REDIS_URL, deskmate starts an
embedded Redis server in DESKMATE_DATA_DIR.
"""

FORGET_HELP = """\
Erase one customer's data from Redis, for an erasure request (GDPR art. 17).

Name the conversation, the customer's user id, or both. For each conversation this
deletes the history, the handoff state (queue places, staff thread pointer, finished
handoff records), dedupe markers, unfinished messages and replies, and every entry of
the transcripts and undelivered streams that belongs to it or names the user; also its
content-gap questions. Day counters (no personal data) stay. Run --dry-run first.

Not erased (not in Redis): files from `deskmate transcripts export`, training sets and
models trained on them, FAQ entries approved from content gaps, and the copies Telegram
and Slack keep. Old transcripts age out on their own after DESKMATE_RETENTION_DAYS.
"""

FORGET_EXAMPLES = """\
examples:
  deskmate forget --channel telegram --conversation 123456789 --dry-run
  deskmate forget --channel telegram --user 123456789      every chat of this Telegram user
  deskmate forget --channel slack --conversation D0123ABCD
  deskmate forget --channel http --conversation widget-42 --user visitor-7
"""

FAQ_FORMATS = """\
FAQ formats:
  .jsonl  one object a line: {"id", "question", "answer", "alternates": [...], "url"?}
  .csv    header with question,answer (id, alternates separated by |, url optional)
  .md     one "## Question" heading per entry, the answer below it; "Also: ..." lines
          right under the heading are alternate phrasings; "## Question {#my-id}" sets the id

Documents (split along their headings into passages cited as "Document › Section"):
  folders  every supported file inside, recursively
  .md      an article: a "# Title" (or front matter with title:/url:) and no FAQ markers
  .html    main content only (trafilatura); .pdf text PDFs (pypdf); .docx (python-docx); .txt
  URLs     a page, or a sitemap.xml whose pages are all imported; robots.txt is honoured
A document that cannot be read is reported with the reason and the rest goes on.
"""


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="deskmate", description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = commands.add_parser(
        "chat",
        help="chat with the bot in this terminal",
        description="Chat with the bot in this terminal. Commands: /help /reset /human /quit.",
        formatter_class=formatter,
    )
    chat.add_argument("--user", default="console-user", help="user id for this chat")
    chat.add_argument(
        "--conversation", default="console:local", help="conversation id (history is kept per id)"
    )

    faq = commands.add_parser(
        "faq", help="import and search the FAQ", epilog=FAQ_FORMATS, formatter_class=formatter
    )
    faq_commands = faq.add_subparsers(dest="faq_command", required=True, metavar="ACTION")
    imp = faq_commands.add_parser(
        "import",
        help="build the index from FAQ files, folders, documents and web pages",
        description="Build the FAQ index from FAQ files, folders, documents and URLs (a "
        "page or a sitemap.xml). Every FAQ file is validated first; a malformed line stops "
        "the import and names file:line. A document or page that cannot be used is "
        "reported and skipped. Unchanged entries and passages keep their embeddings.",
        epilog=FAQ_FORMATS,
        formatter_class=formatter,
    )
    imp.add_argument("files", nargs="+", metavar="SOURCE", help="file, folder or URL")
    imp.add_argument(
        "--calibrate",
        type=Path,
        metavar="QUERIES",
        help="labelled queries (JSONL) to fit the answer/clarify thresholds on",
    )
    imp.add_argument(
        "--no-learn",
        dest="learn",
        action="store_false",
        default=None,
        help="do not fine-tune the embedder on the FAQ's alternates (DESKMATE_FAQ_LEARN)",
    )
    learn = faq_commands.add_parser(
        "learn",
        help="fine-tune the embedder on the imported FAQ; serve it if it helps",
        description="Fine-tune the embedding model on the imported FAQ's alternate "
        "phrasings and labelled queries (contrastive, in-batch negatives; minutes on CPU). "
        "A share of them is held out first: the learned model is registered and served "
        "everywhere only if it finds held-out phrasings better than the base model. "
        "`faq import` does the same with the alternates unless --no-learn.",
        formatter_class=formatter,
    )
    learn.add_argument(
        "--queries",
        type=Path,
        metavar="QUERIES",
        help='labelled queries to learn from too ({"query", "relevant": [ids]}; keep the '
        "ones you calibrate and evaluate on apart)",
    )
    learn.add_argument(
        "--transcripts",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="conversations from `deskmate transcripts export` (repeatable): learn the "
        "questions customers resolved by picking from a clarifying menu, that agents answered "
        "with an entry's answer in a handoff, or whose answer they rated up",
    )
    retr_models = faq_commands.add_parser(
        "model", help="list, promote and roll back retrieval (embedding) model versions"
    )
    retr_actions = retr_models.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    retr_actions.add_parser("list", help="registered versions, held-out MRR, the active one")
    retr_promote = retr_actions.add_parser(
        "promote", help="search with VERSION in every running process"
    )
    retr_promote.add_argument("version", metavar="VERSION", help="a registered version, or base")
    retr_actions.add_parser("rollback", help="serve the version promoted before the active one")
    faq_commands.add_parser(
        "sync",
        help="re-read every source of the index now; running processes follow",
        description="Re-read the files, folders and web pages the index was imported from "
        "(web pages with conditional requests), re-embed only what changed, and publish "
        "the new index in Redis so every running `deskmate serve` serves it. A sync "
        "that fails keeps the current index.",
    )
    search = faq_commands.add_parser("search", help="show ranked FAQ entries for a text")
    search.add_argument("text")
    search.add_argument("-k", type=int, default=5, help="how many entries (default 5)")
    search.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")

    ev = commands.add_parser("eval", help="measure retrieval quality and calibrate thresholds")
    ev_commands = ev.add_subparsers(dest="eval_command", required=True, metavar="WHAT")
    retr = ev_commands.add_parser(
        "retrieval",
        help="recall@1/@5, MRR, out-of-scope precision/recall/F1, latency",
        description="Evaluate retrieval on labelled queries: one JSON object a line, "
        '{"query": "...", "relevant": ["faq-id", ...]}; an empty "relevant" marks an '
        "out-of-scope question that must not be answered from the FAQ. A line may carry "
        'the conversation so far, "history": [{"role": "user"|"agent"|"assistant", '
        '"content": "..."}, ...], oldest first: the query is searched in its context.',
        formatter_class=formatter,
    )
    retr.add_argument(
        "--faq",
        type=Path,
        nargs="+",
        metavar="FILE",
        help="FAQ files to evaluate (default: the imported index)",
    )
    retr.add_argument("--queries", type=Path, required=True, metavar="QUERIES")
    retr.add_argument("--json", action="store_true", help="print the metrics as JSON")
    retr.add_argument("--mode", choices=["hybrid", "dense", "keyword"], default="hybrid")
    retr.add_argument(
        "--calibrate",
        action="store_true",
        help="fit the thresholds on these queries, store them with the index, report with them",
    )
    retr.add_argument(
        "--no-history",
        action="store_true",
        help="search each query alone, ignoring its history (to measure what context adds)",
    )
    retr.add_argument(
        "--no-learn",
        dest="learn",
        action="store_false",
        default=None,
        help="with --faq: evaluate the base embedder, without learning the FAQ's alternates",
    )

    serve = commands.add_parser(
        "serve",
        help="run the channels, brain workers and senders",
        description="Run the web server, every channel whose credentials are set, brain "
        "workers and senders in one process until SIGTERM/SIGINT. Start more processes "
        "(on this host or others) with the same DESKMATE_REDIS_URL to share the work.",
        formatter_class=formatter,
    )
    serve.add_argument(
        "--workers", type=_count, default=4, metavar="N", help="brain workers (default 4)"
    )
    serve.add_argument(
        "--senders",
        type=_count,
        default=4,
        metavar="N",
        help="reply senders (default 4; 0: this process only receives and answers)",
    )
    commands.add_parser(
        "status", help="queue depths, pending work, live processes and the active model"
    )
    report = commands.add_parser(
        "report",
        help="what the bot did: conversations, answered/handed off/resolved rates, ratings",
        description="Figures folded from the transcripts stream (incrementally: only what "
        "was recorded since the last report or dashboard view is read). Dates are UTC days.",
        formatter_class=formatter,
    )
    report.add_argument("--since", required=True, metavar="DATE", help="first day, 2026-11-01")
    report.add_argument("--until", metavar="DATE", help="last day (default today)")
    report.add_argument("--json", action="store_true", help="print the figures as JSON")
    commands.add_parser(
        "dashboard-password",
        help="hash a staff password (read from stdin) for DESKMATE_DASHBOARD_PASSWORD_HASH",
    )
    training_cli.add_commands(commands)
    answers = ev_commands.add_parser(
        "answers",
        help="answer quality end to end: token-F1, ROUGE-L, citations, handoff rates",
        description="Ask labelled questions through the whole brain (retrieval, policy and "
        "the DESKMATE_MODEL_BACKEND answer backend), each in its own conversation, and "
        'compare the replies with the reference "answer" of each query line. A line\'s '
        '"history" (see `deskmate eval retrieval --help`) is written into its conversation '
        "first, as a live chat would have it.",
        formatter_class=formatter,
    )
    answers.add_argument("--faq", type=Path, nargs="+", metavar="FILE", help="FAQ files")
    answers.add_argument("--queries", type=Path, required=True, metavar="QUERIES")
    answers.add_argument("--limit", type=int, metavar="N", help="only the first N queries")
    answers.add_argument("--json", action="store_true", help="print the metrics as JSON")
    commands.add_parser("config", help="show the effective settings (secrets masked)")
    forget = commands.add_parser(
        "forget",
        help="erase one customer's data from Redis (a GDPR erasure request)",
        description=FORGET_HELP,
        epilog=FORGET_EXAMPLES,
        formatter_class=formatter,
    )
    forget.add_argument(
        "--channel",
        required=True,
        choices=["telegram", "slack", "http", "console"],
        help="the channel the customer wrote on",
    )
    forget.add_argument(
        "--conversation",
        metavar="ID",
        help="the conversation: a Telegram chat id (chat:topic in forum topics), a Slack "
        "channel id (channel:thread_ts for a thread), the http conversation_id",
    )
    forget.add_argument(
        "--user",
        metavar="ID",
        help="the customer's user id on the channel (Telegram user id, Slack U..., the http "
        "user_id): every conversation they wrote in is erased whole",
    )
    forget.add_argument(
        "--dry-run", action="store_true", help="show what would be erased; erase nothing"
    )
    return parser


def _count(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError("must be a whole number, 0 or more")
    return int(value)


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_libraries()
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.load()
        setup_logging(settings)
        return _dispatch(args, settings)
    except (
        SettingsError,
        FaqFormatError,
        RedisUnavailable,
        EmbeddingModelError,
        IndexLoadError,
        CalibrationError,
        RegistryError,
        TranscriptFormatError,
    ) as exc:
        print(f"deskmate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    from bots import commands

    if args.command == "chat":
        return asyncio.run(commands.chat(settings, args.user, args.conversation))
    if args.command == "faq" and args.faq_command == "import":
        sources = [as_source(text) for text in args.files]
        return commands.faq_import(settings, sources, args.calibrate, args.learn)
    if args.command == "faq" and args.faq_command == "learn":
        return commands.faq_learn(settings, args.queries, args.transcripts)
    if args.command == "faq" and args.faq_command == "model":
        version = getattr(args, "version", None)
        return asyncio.run(commands.faq_models(settings, args.model_command, version))
    if args.command == "faq" and args.faq_command == "sync":
        return asyncio.run(commands.faq_sync(settings))
    if args.command == "faq" and args.faq_command == "search":
        return commands.faq_search(settings, args.text, args.k, args.mode)
    if args.command == "eval" and args.eval_command == "answers":
        return asyncio.run(
            commands.eval_answers(settings, args.faq, args.queries, args.limit, args.json)
        )
    if args.command == "eval" and args.eval_command == "retrieval":
        return commands.eval_retrieval(
            settings,
            args.faq,
            args.queries,
            args.mode,
            args.calibrate,
            args.json,
            with_history=not args.no_history,
            learn=args.learn,
        )
    if args.command == "serve":
        from bots.serve import serve

        return asyncio.run(serve(settings, args.workers, args.senders))
    if args.command == "status":
        from bots.serve import show_status

        return asyncio.run(show_status(settings))
    if args.command == "report":
        return asyncio.run(commands.insights_report(settings, args.since, args.until, args.json))
    if args.command == "dashboard-password":
        from bots.dashboard.auth import hash_password

        print(hash_password(sys.stdin.readline().rstrip("\n")))
        return 0
    if args.command in training_cli.COMMANDS:
        return training_cli.dispatch(args, settings)
    if args.command == "forget":
        if not args.conversation and not args.user:
            print("deskmate forget: name --conversation, --user or both", file=sys.stderr)
            return 2
        return asyncio.run(
            commands.forget(settings, args.channel, args.conversation, args.user, args.dry_run)
        )
    if args.command == "config":
        for name, value, help_text in settings.describe():
            print(f"{name:32} {value:40} {help_text}")
        return 0
    raise AssertionError(args)  # argparse rejects anything else


if __name__ == "__main__":
    sys.exit(main())
