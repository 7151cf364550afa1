"""What each CLI command does, once its arguments are parsed."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bots.app import build_app, make_backend, threshold_overrides
from bots.console import run_console
from bots.faq_sync import SYNC_WORK_SECONDS, SyncError, sync_sources
from bots.indexing import (
    calibrate_index,
    ensure_index,
    import_faq,
    import_knowledge,
    ingest_options,
)
from bots.progress import counting, progress_bar
from bots.retrieval_models import (
    active_embedder,
    index_for,
    learn_from_faq,
    learned_embedder,
    make_active,
    register,
    retriever_registry,
)
from bots.retrieval_models import (
    active_key as retriever_active_key,
)
from brain.answering.registry import (
    BASE,
    Column,
    apply_version_action,
    version_switched,
    versions_table,
)
from brain.conversations import ConversationStore
from brain.evaluation.answers import evaluate_answers
from brain.keys import RedisKeys
from brain.mood.reader import MoodReader
from brain.pipeline import Brain
from brain.redis_server import open_redis
from brain.settings import Settings
from retrieval.embedder import Embedder
from retrieval.evaluation import (
    FOLDS,
    RetrievalReport,
    calibrate,
    cross_validated_oos,
    load_queries,
    report,
    run_queries,
    too_little_data,
)
from retrieval.index import FaqIndex, SearchMode
from retrieval.knowledge.sources import Source, collect
from retrieval.learning import LearnResult
from retrieval.retriever import Retriever


async def chat(settings: Settings, user_id: str, conversation_id: str) -> int:
    for stream in (sys.stdin, sys.stdout):
        if isinstance(stream, io.TextIOWrapper):
            # A line that is not UTF-8 (pasted from elsewhere) is read with U+FFFD, and a
            # reply is always written, rather than the chat ending with a traceback.
            stream.reconfigure(errors="replace")
    # Handoffs from the console reach nobody: the console runs the brain directly, not
    # through the outbox that posts them to the staff channel.
    async with build_app(settings, staff_reachable=False) as app:
        await run_console(
            app.brain,
            sys.stdin,
            sys.stdout,
            user_id=user_id,
            conversation_id=conversation_id,
            prompt=sys.stdin.isatty(),
        )
    return 0


def faq_import(
    settings: Settings, files: Sequence[Source], queries: Path | None, learn: bool | None = None
) -> int:
    """Build the index; learn the FAQ (unless off) and serve what it learnt; calibrate."""
    base = Embedder(settings.embedding_model)
    embedder = base
    learnt = None
    if settings.faq_learn if learn is None else learn:
        # Learn first (validating every file on the way), so the index is embedded once,
        # by the model that will serve it.
        entries, _ = collect(list(files), ingest_options(settings))
        learnt = learn_from_faq(settings, base, entries)
        embedder = learned_embedder(learnt, base)
    index, rebuilt, report = import_knowledge(
        settings.index_dir, files, embedder, options=ingest_options(settings)
    )
    phrasings = len(index.phrasing_keys)
    verb = "Built" if rebuilt else "Unchanged:"
    print(f"{verb} index of {len(index)} entries ({phrasings} phrasings) in {settings.index_dir}")
    if report.documents or report.skipped:
        print(report.render())
    if learnt is not None:
        _serve_learnt(settings, learnt, base)
    if queries is not None:
        index = calibrate_index(settings.index_dir, index, embedder, queries)
    _print_thresholds(index)
    return 0


def faq_learn(settings: Settings, queries: Path | None, transcripts: Sequence[Path] = ()) -> int:
    """Fine-tune the embedder on the imported FAQ's phrasings, `queries`' labelled ones and
    the resolved questions in `transcripts` (`training.retrieval_pairs`)."""
    from training.retrieval_pairs import phrasings_from_conversations
    from training.transcripts import read_conversations

    base = Embedder(settings.embedding_model)
    index = ensure_index(settings, active_embedder(settings, base))
    labelled = []
    if queries is not None:
        labelled = [(q.query, q.relevant[0]) for q in load_queries(queries) if q.relevant]
    for path in transcripts:
        found, signals = phrasings_from_conversations(read_conversations(path), index.entries)
        labelled += [(phrasing.text, phrasing.entry_id) for phrasing in found]
        counts = ", ".join(f"{signals[s]} {s.replace('_', ' ')}" for s in sorted(signals))
        print(f"{path}: {len(found)} phrasings of FAQ entries ({counts or 'none found'})")
    learnt = learn_from_faq(settings, base, index.entries, labelled)
    index_for(learned_embedder(learnt, base), index, settings.index_dir)
    _serve_learnt(settings, learnt, base)
    return 0


def _serve_learnt(settings: Settings, learnt: LearnResult, base: Embedder) -> None:
    """Register what was learnt (if kept) and make it, or the base model, the served one."""
    took = f" (learnt in {learnt.seconds:.0f} s)" if learnt.seconds else ""
    print(f"Learning: {learnt.reason}{took}")
    name = register(settings, learnt, base)
    if name == BASE and not retriever_registry(settings).versions():
        return  # nothing was ever learnt here: the base model serves, as it always has
    if asyncio.run(_make_active(settings, name)):
        print(
            f"Serving retrieval model {name}: running processes switch within "
            "DESKMATE_MODEL_WATCH_SECONDS (`deskmate faq model rollback` undoes)."
        )


async def _make_active(settings: Settings, name: str) -> bool:
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        return await make_active(settings, redis, name)


async def faq_models(settings: Settings, action: str, version: str | None) -> int:
    """`deskmate faq model list | promote VERSION | rollback`."""
    registry = retriever_registry(settings)
    key = retriever_active_key(settings)
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        prefix = settings.redis_prefix
        active = await apply_version_action(redis, prefix, registry, action, version, key)
    if action != "list":
        print(version_switched(action, active, "retrieval model "))
    else:
        columns = [
            Column.metric("held-out MRR", 13, "held_out_mrr"),
            Column.metric("(base)", 7, "base_held_out_mrr"),
            Column("pairs", 6, lambda v: str(v.info.get("pairs", 0))),
        ]
        last = ("", lambda v: "")
        print(versions_table(registry, active, columns, last, settings.embedding_model))
    return 0


async def faq_sync(settings: Settings) -> int:
    """Re-read the imported index's sources now and publish the result in Redis."""
    embedder = Embedder(settings.embedding_model)
    index = FaqIndex.load(settings.index_dir)
    retriever = Retriever(embedder, index)
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        try:
            outcome = await sync_sources(
                retriever,
                redis,
                settings.redis_prefix,
                settings.index_dir,
                options=ingest_options(settings),
                timeout=SYNC_WORK_SECONDS,
            )
        except SyncError as exc:
            print(f"deskmate: sync failed, the index stays as it was: {exc}", file=sys.stderr)
            return 1
    verb = "Updated" if outcome.rebuilt else "Unchanged:"
    print(f"{verb} index of {len(outcome.index)} entries in {settings.index_dir}")
    print(outcome.report.render())
    if outcome.published:
        print("Published: running processes switch within DESKMATE_FAQ_WATCH_SECONDS.")
    return 0


def _print_thresholds(index: FaqIndex) -> None:
    print("\n".join(index.thresholds.describe()))


def faq_search(settings: Settings, text: str, k: int, mode: SearchMode) -> int:
    embedder = active_embedder(settings, Embedder(settings.embedding_model))
    index = ensure_index(settings, embedder)
    hits = Retriever(embedder, index).search(text, k=k, mode=mode)
    if not hits:
        print("No entries matched.")
        return 0
    t = index.thresholds
    confidence = t.confidence(hits)
    print(f"{'#':>2}  {'score':>6}  {'dense':>6}  {'kw':>5}  {'id':24}  question")
    for rank, hit in enumerate(hits, start=1):
        print(
            f"{rank:>2}  {hit.score:6.3f}  {hit.dense:6.3f}  {hit.keyword:5.2f}  "
            f"{hit.id[:24]:24}  {hit.title}"
        )
    verdict = (
        "answer" if confidence >= t.answer else "clarify" if confidence >= t.clarify else "hand off"
    )
    print(f"\nPolicy: {verdict} ({t.measure} {confidence:.3f})")
    _print_thresholds(index)
    return 0


def eval_retrieval(
    settings: Settings,
    faq: Sequence[Path] | None,
    queries_path: Path,
    mode: SearchMode,
    do_calibrate: bool,
    as_json: bool,
    with_history: bool = True,
    learn: bool | None = None,
) -> int:
    """Measure what a deployment serves: with `--faq`, the index `faq import` would build
    (learning included when it is on); the queries are searched, never learnt from, and
    out-of-scope figures come from cross-validated calibration on them."""
    queries = load_queries(queries_path)
    base = Embedder(settings.embedding_model)
    embedder = base if faq else active_embedder(settings, base)
    learnt = None
    if faq and (settings.faq_learn if learn is None else learn):
        entries, _ = collect(list(faq), ingest_options(settings))
        learnt = learn_from_faq(settings, base, entries, show_progress=not as_json)
        embedder = learned_embedder(learnt, base)
    index, directory = _evaluation_index(settings, faq, embedder, quiet=as_json)
    retriever = Retriever(embedder, index)
    retriever.search("warm up")  # the first query pays one-off set-up costs
    with progress_bar("Evaluating", not as_json) as update:
        scored = run_queries(
            retriever,
            queries,
            mode=mode,
            progress=counting(update, len(queries)),
            with_history=with_history,
        )
    predicted = cross_validated_oos(scored)
    if do_calibrate:
        index = index.with_thresholds(calibrate(scored, str(queries_path), model=index.model))
        index.save(directory)
    result = report(scored, index.thresholds, predicted)
    if as_json:
        print(json.dumps(result.to_json()))
        return 0
    if learnt is not None:
        print(f"Learning: {learnt.reason}")
    print_report(result, mode)
    if predicted is not None:
        print(
            f"Out-of-scope figures: {FOLDS}-fold cross-validated (each query judged by "
            "thresholds calibrated on the other folds). Calibrated on all of them:"
        )
        print("\n".join(calibrate(scored, str(queries_path), model=index.model).describe()))
    else:
        reason = too_little_data(scored) or "the queries are all of one kind"
        print(f"Out-of-scope figures with the stored thresholds ({reason}):")
        _print_thresholds(index)
    if do_calibrate:
        print(f"Stored with the index in {directory}.")
    return 0


def _evaluation_index(
    settings: Settings, faq: Sequence[Path] | None, embedder: Embedder, quiet: bool
) -> tuple[FaqIndex, Path]:
    """The index of `faq` (kept per file list under the data dir), else the served one."""
    if faq:
        key = hashlib.sha1("\n".join(str(p.resolve()) for p in faq).encode()).hexdigest()[:12]
        directory = settings.data_dir / "eval-indexes" / key
        index, _ = import_faq(directory, faq, embedder, show_progress=not quiet)
        return index, directory
    return ensure_index(settings, embedder, show_progress=not quiet), settings.index_dir


async def eval_answers(
    settings: Settings,
    faq: Sequence[Path] | None,
    queries_path: Path,
    limit: int | None,
    as_json: bool,
) -> int:
    """Labelled questions end to end through the brain with the configured backend."""
    queries = load_queries(queries_path)[:limit]
    embedder = Embedder(settings.embedding_model)
    index, _ = _evaluation_index(settings, faq, embedder, quiet=as_json)
    backend = await make_backend(settings, embedder)
    prefix = RedisKeys(settings.redis_prefix).evaluation_prefix
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        store = ConversationStore(redis, prefix=prefix, ttl_seconds=3600)
        brain = Brain(
            Retriever(embedder, index, top_k=settings.top_k),
            store,
            backend,
            max_message_chars=settings.max_message_chars,
            bot_name=settings.bot_name,
            thresholds=threshold_overrides(settings, index.thresholds),
            mood=MoodReader.default(settings.embedding_model, embedder.dimension),
        )
        try:
            with progress_bar("Answering", not as_json) as update:
                step = counting(update, len(queries))
                result = await evaluate_answers(brain, queries, progress=step)
        finally:
            await backend.aclose()
            async for key in redis.scan_iter(match=f"{prefix}*"):
                await redis.delete(key)  # evaluation conversations are not transcripts
    if as_json:
        print(json.dumps(result.to_json()))
        return 0
    rows = [
        ("questions", f"{result.n}"),
        ("answered", f"{result.answered:.3f}"),
        ("clarified", f"{result.clarified:.3f}"),
        ("handed off", f"{result.handed_off:.3f}"),
        ("answer token-F1", f"{result.token_f1:.3f}" if result.with_reference else "n/a"),
        ("answer ROUGE-L", f"{result.rouge_l:.3f}" if result.with_reference else "n/a"),
        ("citation accuracy", f"{result.citation_accuracy:.3f}"),
        ("handoff when in scope", f"{result.handoff_in_scope:.3f}"),
        ("answered out of scope", f"{result.oos_answered:.3f}"),
        ("latency p50", f"{result.p50_ms:.1f} ms"),
        ("latency p95", f"{result.p95_ms:.1f} ms"),
    ]
    print(f"Answers ({backend.version})")
    for name, value in rows:
        print(f"  {name:24} {value:>10}")
    if not result.with_reference:
        print('  (no query line has a reference "answer": token-F1 and ROUGE-L need one)')
    if result.answered_by:
        print("  answers written by (share of the answers):")
        for version, share in result.answered_by.items():
            print(f"    {share:6.1%}  {version}")
    return 0


def print_report(result: RetrievalReport, mode: str) -> None:
    rows = [
        ("queries", f"{result.n}"),
        ("recall@1", f"{result.recall_at_1:.3f}"),
        ("recall@5", f"{result.recall_at_5:.3f}"),
        ("MRR", f"{result.mrr:.3f}"),
        ("out-of-scope precision", f"{result.oos_precision:.3f}"),
        ("out-of-scope recall", f"{result.oos_recall:.3f}"),
        ("out-of-scope F1", f"{result.oos_f1:.3f}"),
        ("latency p50", f"{result.p50_ms:.1f} ms"),
        ("latency p95", f"{result.p95_ms:.1f} ms"),
    ]
    print(f"Retrieval ({mode})")
    for name, value in rows:
        print(f"  {name:24} {value:>10}")


async def insights_report(
    settings: Settings, since: str, until: str | None, as_json: bool, now: float | None = None
) -> int:
    """`deskmate report`: fold what is new in the transcripts, then sum the days asked."""

    from brain.insights.aggregates import Insights, day_of
    from brain.insights.report import build_report
    from training.transcripts import parse_when

    first = day_of(parse_when(since))
    last = day_of(parse_when(until)) if until else day_of(time.time() if now is None else now)
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        insights = Insights(redis, settings.redis_prefix, settings.resolved_window)
        await insights.update(now)
        figures = build_report(first, last, await insights.days(first, last))
    if as_json:
        print(json.dumps(figures.to_json(), ensure_ascii=False, indent=2))
    else:
        print(figures.render())
    return 0


async def forget(
    settings: Settings,
    channel: str,
    conversation: str | None,
    user: str | None,
    dry_run: bool,
) -> int:
    """`deskmate forget`: erase one customer's data (or show what would go)."""
    from bots.http_channel import PREFIX as HTTP_PREFIX
    from brain.erasure import Eraser
    from brain.keys import RedisKeys
    from brain.redis_server import open_redis

    if channel == "http" and conversation and not conversation.startswith(HTTP_PREFIX):
        conversation = HTTP_PREFIX + conversation  # how the http channel names it in Redis
    async with open_redis(settings.redis_url, settings.data_dir) as redis:
        eraser = Eraser(redis, RedisKeys(settings.redis_prefix))
        erasure = await eraser.forget(
            channel, conversation=conversation, user=user, dry_run=dry_run
        )
    print(("would erase (dry run):" if dry_run else "erased:") + "\n" + erasure.describe())
    return 0
