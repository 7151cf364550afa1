"""What `deskmate classifier ...` does (parsed in training/cli.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from brain.answering.registry import (
    BASE,
    Column,
    ModelRegistry,
    apply_version_action,
    read_active,
    version_switched,
    versions_table,
)
from brain.keys import RedisKeys
from brain.mood.classifier import DEFAULT_DIR, ClassifierLoadError, MoodClassifier, same_embedder
from brain.mood.reader import REGEX
from brain.redis_server import open_redis
from brain.settings import Settings
from brain.types import NEUTRAL_MOOD
from retrieval.embedder import Embedder
from training.classifier import (
    ClassifierConfig,
    ClassifierDataError,
    evaluate,
    examples_from_conversations,
    staff_labelled,
    train,
)
from training.transcripts import read_conversations


def classifier_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.classifier_command == "train":
            return _train(args, settings)
        if args.classifier_command == "eval":
            return _eval(args, settings)
        if args.classifier_command == "examples":
            return _examples(args, settings)
        return asyncio.run(_versions(args, settings))
    except (ClassifierDataError, ClassifierLoadError) as exc:
        print(f"deskmate: error: {exc}", file=sys.stderr)
        return 2


def _labels(text: str) -> tuple[str, ...]:
    return tuple(label.strip() for label in text.split(",") if label.strip())


def _train(args: argparse.Namespace, settings: Settings) -> int:
    config = ClassifierConfig(
        data=list(args.data),
        dev=args.dev,
        neutral=list(args.neutral),
        regularization=args.regularization,
        anger_label=args.anger_label,
        positive=_labels(args.positive),
        negative=_labels(args.negative),
        strong_precision=args.strong_precision,
        bundle=args.bundle,
        register=not args.no_register,
        top_layer=args.top_layer,
        epochs=args.epochs,
    )
    embedder = Embedder(settings.embedding_model)
    result = train(
        config, embedder, ModelRegistry(settings.classifier_registry_dir, "mood classifier")
    )
    report = result.report
    print(f"Trained on {report['examples']} texts in {result.seconds:.1f} s.")
    print(f"Evaluated on {report['evaluated_on']}:")
    print(table(report["evaluation"]))
    thresholds = report["thresholds"]
    print(
        f"Anger thresholds: strong {thresholds['strong']:.3f}, "
        f"sustained {thresholds['sustained']:.3f} (calibrated on {thresholds['calibrated_from']}; "
        f"held-out neutral texts at or above strong: {report['neutral_flagged_strong']:.1%})"
    )
    if config.bundle is not None:
        print(f"Wrote the classifier to {config.bundle}.")
    if result.version is not None:
        where = result.version.adapter_dir
        print(
            f"Registered {result.version.name} (report: {where}/report.json, "
            f"{where}/confusion.png); serve it with `deskmate classifier promote "
            f"{result.version.name}`."
        )
    return 0


def table(result: dict[str, Any]) -> str:
    lines = [f"{'label':16} {'precision':>9} {'recall':>7} {'F1':>6}"]
    for label, row in result["per_label"].items():
        lines.append(f"{label:16} {row['precision']:9.3f} {row['recall']:7.3f} {row['f1']:6.3f}")
    lines.append(f"{'macro-F1':16} {'':>9} {'':>7} {result['macro_f1']:6.3f}   (n={result['n']})")
    return "\n".join(lines)


async def _active(settings: Settings) -> str:
    registry = ModelRegistry(settings.classifier_registry_dir, "mood classifier")
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        key = RedisKeys(settings.redis_prefix).classifier_active
        return await read_active(redis, settings.redis_prefix, registry, key)


def load_version(name: str, settings: Settings) -> MoodClassifier | None:
    """The classifier called `name` (`base` = the bundled one); None for `regex`."""
    if name == REGEX:
        return None
    if name == BASE:
        return MoodClassifier.load(DEFAULT_DIR)
    version = ModelRegistry(settings.classifier_registry_dir, "mood classifier").get(name)
    assert version.adapter_dir is not None
    return MoodClassifier.load(version.adapter_dir, version.name)


def _eval(args: argparse.Namespace, settings: Settings) -> int:
    name = args.version or asyncio.run(_active(settings))
    classifier = load_version(name, settings)
    embedder = None
    if classifier is not None:
        if not same_embedder(classifier.embedder, settings.embedding_model):
            print(
                f"classifier {name} expects {classifier.embedder} embeddings, not "
                f"{settings.embedding_model}: measuring the word-list fallback",
                file=sys.stderr,
            )
            classifier = None
        else:
            embedder = Embedder(settings.embedding_model)
    result = evaluate(args.data, classifier, embedder, args.report)
    if args.json:
        print(json.dumps(result))
        return 0
    shown = classifier.version if classifier is not None else "regex (word-list fallback)"
    print(f"Mood classifier {shown} on {args.data}:")
    print(table(result))
    if args.report is not None:
        print(f"Report: {args.report}/report.json, {args.report}/confusion.png")
    return 0


def _examples(args: argparse.Namespace, settings: Settings) -> int:
    label = args.label
    if not label:
        classifier = load_version(asyncio.run(_active(settings)), settings)
        label = classifier.anger_label if classifier is not None else "anger"
    from training.transcripts import TranscriptFormatError

    try:
        conversations = read_conversations(args.transcripts)
    except TranscriptFormatError as exc:
        raise ClassifierDataError(str(exc)) from exc
    lines = examples_from_conversations(conversations, label)
    labelled = staff_labelled(conversations)
    neutral = [line for line in labelled if line["label"] == NEUTRAL_MOOD]
    lines += [line for line in labelled if line["label"] != NEUTRAL_MOOD]
    _write_lines(args.out, lines)
    print(
        f"Wrote {len(lines)} examples from {len(conversations)} conversations to {args.out} "
        f"({len(lines) - len(labelled) + len(neutral)} {label!r} from anger handoffs, "
        f"{len(labelled) - len(neutral)} labelled by staff)."
    )
    if neutral and args.neutral_out is not None:
        _write_lines(args.neutral_out, neutral)
        print(f"Wrote {len(neutral)} messages staff labelled neutral to {args.neutral_out}.")
    elif neutral:
        print(f"Left out {len(neutral)} messages staff labelled neutral (see --neutral-out).")
    return 0


def _write_lines(path: Path, lines: list[dict[str, str]]) -> None:
    Path(path).write_text(
        "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8"
    )


async def _versions(args: argparse.Namespace, settings: Settings) -> int:
    registry = ModelRegistry(settings.classifier_registry_dir, "mood classifier")
    key = RedisKeys(settings.redis_prefix).classifier_active
    action, version = args.classifier_command, getattr(args, "version", None)
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        prefix = settings.redis_prefix
        active = await apply_version_action(redis, prefix, registry, action, version, key)
    if action != "list":
        print(version_switched(action, active, "classifier "))
    else:
        columns = [
            Column.metric("macro-F1", 9, "macro_f1"),
            Column.metric("anger F1", 9, "anger_f1"),
        ]
        last = ("labels", lambda v: ",".join(v.info.get("labels", [])))
        print(versions_table(registry, active, columns, last, "(shipped with deskmate)"))
    return 0
