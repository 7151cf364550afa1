"""The support-staff commands: `deskmate transcripts`, `deskmate train`, `deskmate model`,
`deskmate classifier`.

bots/cli.py adds these to its parser with `add_commands` and hands parsed arguments to
`dispatch`. Heavy imports (torch, models) happen only when a command needs them; the
`train` options come from transformers' HfArgumentParser, so building the parser imports
the transformers package root (not torch).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from brain.answering.registry import (
    BASE,
    Column,
    ModelRegistry,
    apply_version_action,
    version_switched,
    versions_table,
)
from brain.redis_server import open_redis
from brain.settings import Settings
from training.transcripts import parse_when, write_conversations

COMMANDS = ("transcripts", "train", "model", "classifier")


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the transcripts / train / model sub-commands."""
    from training.train import DESCRIPTION, USAGE, HelpFormatter, build_parser

    formatter = argparse.RawDescriptionHelpFormatter
    transcripts = commands.add_parser(
        "transcripts", help="export or import conversations for training"
    )
    actions = transcripts.add_subparsers(
        dest="transcripts_command", required=True, metavar="ACTION"
    )
    export = actions.add_parser(
        "export",
        help="write recorded conversations as JSONL",
        description="Write conversations from the transcripts stream, one JSON object a line: "
        '{"messages": [{"role", "content", "rating"?, ...}], "meta": {...}}. Dates are UTC '
        "unless they name a zone; a bare --until date includes that day.",
        formatter_class=formatter,
    )
    export.add_argument("--since", help="first day or time, e.g. 2026-11-01")
    export.add_argument("--until", help="last day (inclusive) or time")
    export.add_argument("--channel", choices=["telegram", "slack", "console", "http"])
    export.add_argument("--out", type=Path, required=True, metavar="FILE")
    imp = actions.add_parser(
        "import",
        help="convert a Slack or Telegram export, or labelled queries, into the same JSONL",
        description="Slack: the workspace export zip. Telegram: result.json from Telegram "
        "Desktop's export (one chat or all chats). Queries: a `deskmate eval` query file "
        'whose lines carry "history" and a reference "answer"; each line becomes a '
        "conversation ending in that answer as the agent's reply. --hold-out keeps a share "
        "of the dialogues (every turn of one dialogue on the same side) out of the training "
        "file and writes them to --held-out-file for `deskmate eval answers`.",
        formatter_class=formatter,
    )
    imp.add_argument("file", type=Path, metavar="FILE")
    imp.add_argument("--format", choices=["slack", "telegram", "queries"], required=True)
    imp.add_argument("--out", type=Path, required=True, metavar="FILE")
    imp.add_argument(
        "--hold-out",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="queries: share of dialogues kept out for evaluation (0-1, default 0)",
    )
    imp.add_argument(
        "--held-out-file",
        type=Path,
        metavar="FILE",
        help="queries: where the held-out queries go (needed with --hold-out)",
    )
    imp.add_argument(
        "--staff",
        action="append",
        default=[],
        metavar="NAME_OR_ID",
        help="Telegram: a support-team member in group chats (repeatable)",
    )

    commands.add_parser(
        "train",
        parents=[build_parser(add_help=False)],  # TrainConfig's options, by HfArgumentParser
        help="fine-tune a LoRA adapter on conversations and register it",
        description=DESCRIPTION,
        usage=USAGE,
        formatter_class=HelpFormatter,
    )

    model = commands.add_parser("model", help="list, promote and roll back model versions")
    model_actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    model_actions.add_parser("list", help="registered versions, their scores, the active one")
    prom = model_actions.add_parser(
        "promote", help="serve VERSION in every running process (within seconds)"
    )
    prom.add_argument("version", metavar="VERSION", help=f"a registered version, or {BASE}")
    model_actions.add_parser("rollback", help="serve the version promoted before the active one")
    add_classifier_commands(commands)


CLASSIFIER_DATA = """\
labelled data: JSONL, one {"text": "...", "label": "..."} a line; label names are
whatever the data uses (e.g. anger / joy / optimism / sadness). The anger label
escalates; sentiment = P(emotional) x (P(positive labels) - P(negative labels)), where
P(emotional) comes from a gate trained against --neutral customer questions.
"""


def add_classifier_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """`deskmate classifier train | eval | examples | list | promote | rollback`."""
    formatter = argparse.RawDescriptionHelpFormatter
    classifier = commands.add_parser(
        "classifier",
        help="train, evaluate, promote and roll back the mood classifier",
        epilog=CLASSIFIER_DATA,
        formatter_class=formatter,
    )
    actions = classifier.add_subparsers(dest="classifier_command", required=True, metavar="ACTION")
    train = actions.add_parser(
        "train",
        help="train a mood classifier on labelled JSONL and register it (not active)",
        description="Embed the texts with the retrieval embedder (MiniLM), fine-tune its last "
        "layer + a head on the token states entering it (or with --no-top-layer fit a "
        "logistic regression head on the sentence vectors), calibrate the anger thresholds "
        "on --dev (default: a held-out tenth), write report.json and confusion.png, and "
        "register a version.",
        epilog=CLASSIFIER_DATA,
        formatter_class=formatter,
    )
    train.add_argument("data", nargs="+", type=Path, metavar="DATA.jsonl")
    train.add_argument("--dev", type=Path, metavar="DEV.jsonl", help="calibration / report set")
    train.add_argument(
        "--neutral",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE",
        help="JSONL of neutral customer questions (FAQ files, labelled query files): most "
        "support messages express no emotion, and the gate learnt from these keeps them "
        "from reading as angry",
    )
    train.add_argument(
        "--regularization", type=float, default=4.0, help="logistic regression C (default 4)"
    )
    train.add_argument("--anger-label", default="", help="the label that escalates")
    train.add_argument(
        "--positive", default="", help="labels counting as positive sentiment, comma-separated"
    )
    train.add_argument(
        "--negative", default="", help="labels counting as negative sentiment, comma-separated"
    )
    train.add_argument(
        "--strong-precision",
        type=float,
        default=0.9,
        help="precision (on dev) of the one-message anger threshold (default 0.9)",
    )
    train.add_argument(
        "--bundle", type=Path, metavar="DIR", help="also write the classifier files here"
    )
    train.add_argument("--no-register", action="store_true", help="do not register a version")
    train.add_argument(
        "--top-layer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="fine-tune MiniLM's last layer + a head on the token states entering it "
        "(default; --no-top-layer: a logistic regression head over the sentence vectors)",
    )
    train.add_argument(
        "--epochs", type=int, default=3, help="top layer: passes over the data (default 3)"
    )
    evaluate = actions.add_parser(
        "eval",
        help="per-label precision/recall/F1 and macro-F1 on labelled JSONL",
        description="Evaluate the active classifier (or --version; `regex` = the word-list "
        'fallback). --json prints {"n", "macro_f1", "per_label": {label: {"precision", '
        '"recall", "f1"}}}.',
        epilog=CLASSIFIER_DATA,
        formatter_class=formatter,
    )
    evaluate.add_argument("data", type=Path, metavar="DATA.jsonl")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--version", help=f"a registered version, {BASE} or regex")
    evaluate.add_argument(
        "--report", type=Path, metavar="DIR", help="write report.json and confusion.png here"
    )
    examples = actions.add_parser(
        "examples",
        help="training lines from exported transcripts: anger handoffs, staff labels",
        description="Read a `deskmate transcripts export` file and write labelled JSONL "
        "(personal data redacted) to train on beside the public data: the customer "
        "messages that led to a handoff for anger, and every message staff labelled in "
        "the dashboard's conversation viewer. Messages labelled neutral go to "
        "--neutral-out, the gate's examples. Then: `deskmate classifier train "
        "public.jsonl ours.jsonl --neutral ours-neutral.jsonl`.",
        formatter_class=formatter,
    )
    examples.add_argument("transcripts", type=Path, metavar="TRANSCRIPTS.jsonl")
    examples.add_argument("--out", type=Path, required=True, metavar="FILE")
    examples.add_argument(
        "--label", default="", help="label of anger handoffs' messages (default: the anger label)"
    )
    examples.add_argument(
        "--neutral-out",
        type=Path,
        metavar="FILE",
        help="write the messages staff labelled neutral here (else they are left out)",
    )
    actions.add_parser("list", help="registered versions, their scores, the active one")
    prom = actions.add_parser("promote", help="serve VERSION in every running process")
    prom.add_argument(
        "version", metavar="VERSION", help=f"a registered version, or {BASE} (the bundled one)"
    )
    actions.add_parser("rollback", help="serve the version promoted before the active one")


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "transcripts" and args.transcripts_command == "export":
        return asyncio.run(_export(args, settings))
    if args.command == "transcripts":
        return _import(args)
    if args.command == "train":
        from brain.answering.model_loading import ModelLoadError
        from brain.prompt import PromptFormatError
        from training.report import summary
        from training.train import TrainingError, config_from_args, main

        try:
            result = main(config_from_args(args), settings)
        except (TrainingError, PromptFormatError, ModelLoadError) as exc:
            print(f"deskmate: error: {exc}", file=sys.stderr)
            return 2
        print(summary(result.report))
        return 0
    if args.command == "classifier":
        from training.classifier_commands import classifier_command

        return classifier_command(args, settings)
    return asyncio.run(_model(args, settings))


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    from training.transcripts import export_transcripts

    since = parse_when(args.since) if args.since else None
    until = parse_when(args.until, end_of_day=True) if args.until else None
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        conversations = await export_transcripts(
            redis, settings.redis_prefix, since, until, args.channel
        )
    count = write_conversations(args.out, conversations)
    ratings = sum(sum(c.meta["ratings"].values()) for c in conversations)
    agents = sum(any(m.role == "agent" for m in c.messages) for c in conversations)
    print(
        f"Wrote {count} conversations to {args.out} ({ratings} rated answers, "
        f"{agents} with agent replies)."
    )
    return 0


def _import(args: argparse.Namespace) -> int:
    from training.importers import import_queries, import_slack, import_telegram, write_queries

    if args.format == "queries":
        if not 0.0 <= args.hold_out < 1.0:
            print("deskmate: error: --hold-out must be at least 0 and below 1", file=sys.stderr)
            return 2
        if args.hold_out and args.held_out_file is None:
            print("deskmate: error: --hold-out needs --held-out-file", file=sys.stderr)
            return 2
        conversations, held = import_queries(args.file, args.hold_out)
        count = write_conversations(args.out, conversations)
        print(f"Wrote {count} conversations from {args.file} to {args.out}.")
        if args.held_out_file is not None:
            kept = write_queries(args.held_out_file, held)
            print(f"Held out {kept} queries in {args.held_out_file}.")
        return 0
    if args.format == "slack":
        conversations = import_slack(args.file)
    else:
        conversations = import_telegram(args.file, staff=args.staff)
    count = write_conversations(args.out, conversations)
    print(f"Wrote {count} conversations from {args.file} to {args.out}.")
    return 0


async def _model(args: argparse.Namespace, settings: Settings) -> int:
    registry = ModelRegistry(settings.registry_dir)
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        action, version = args.model_command, getattr(args, "version", None)
        active = await apply_version_action(redis, settings.redis_prefix, registry, action, version)
    if action != "list":
        print(version_switched(action, active, ""))
    else:
        columns = [
            Column.metric("token-F1", 9, "token_f1"),
            Column.metric("ROUGE-L", 8, "rouge_l"),
            Column.metric("cites", 6, "citation_accuracy"),
        ]
        last = ("base", lambda v: v.base_model)
        print(versions_table(registry, active, columns, last, "(no adapter)"))
    return 0
