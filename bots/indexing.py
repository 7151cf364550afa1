"""Building, loading and calibrating the FAQ index from settings."""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bots.progress import progress_bar
from bots.retrieval_models import index_for
from brain.settings import SAMPLE_FAQ, Settings
from retrieval.embedder import Embedder
from retrieval.evaluation import calibrate, load_queries, run_queries
from retrieval.index import FaqIndex, IndexLoadError, rebuild
from retrieval.knowledge.sources import ImportReport, IngestOptions, Source, collect, is_url
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)
SAMPLE_QUERIES = SAMPLE_FAQ.with_name("queries.jsonl")


def ingest_options(settings: Settings) -> IngestOptions:
    """How documents and web pages are read, from settings."""
    return IngestOptions(
        max_bytes=int(settings.document_max_mb * 1024 * 1024),
        web_delay=settings.web_delay,
        web_timeout=settings.web_timeout,
    )


def _saved_source(source: Source) -> str:
    return str(source) if is_url(source) else str(Path(source).resolve())


def import_knowledge(
    directory: Path,
    sources: Sequence[Source],
    embedder: Embedder,
    *,
    show_progress: bool = True,
    options: IngestOptions | None = None,
) -> tuple[FaqIndex, bool, ImportReport]:
    """Read every source (FAQ files strictly, documents and pages leniently: see
    retrieval.knowledge.sources), then rebuild the index, embedding only new texts.

    Nothing is saved unless something was read: a sync that finds nothing raises and
    the index on disk (and in every serving process) stays as it was.
    """
    options = options or IngestOptions()
    if options.cache_path is None:
        options = dataclasses.replace(
            options, cache_path=directory.with_name(directory.name + "-web-cache.json")
        )
    with progress_bar("Reading sources", show_progress) as update:
        entries, report = collect(sources, options, progress=update)
    with progress_bar("Embedding", show_progress) as update:
        index, rebuilt = rebuild(
            directory,
            entries,
            embedder,
            progress=update,
            sources=[_saved_source(source) for source in sources],
        )
    return index, rebuilt, report


def import_faq(
    directory: Path,
    paths: Sequence[Source],
    embedder: Embedder,
    *,
    show_progress: bool = True,
    options: IngestOptions | None = None,
) -> tuple[FaqIndex, bool]:
    """Load and validate every FAQ file first (nothing is imported half-way), read the
    documents and pages beside them, then rebuild."""
    index, rebuilt, _ = import_knowledge(
        directory, paths, embedder, show_progress=show_progress, options=options
    )
    return index, rebuilt


def calibrate_index(
    directory: Path, index: FaqIndex, embedder: Embedder, queries_path: Path
) -> FaqIndex:
    """Fit thresholds on labelled queries and store them with the index."""
    queries = load_queries(queries_path)
    scored = run_queries(Retriever(embedder, index), queries)
    calibrated = index.with_thresholds(calibrate(scored, str(queries_path), model=index.model))
    calibrated.save(directory)
    return calibrated


def ensure_index(settings: Settings, embedder: Embedder, show_progress: bool = True) -> FaqIndex:
    """The index to serve: from DESKMATE_FAQ if set, else the imported one, else the sample."""
    directory = settings.index_dir
    if settings.faq:
        index, _ = import_faq(
            directory,
            settings.faq,
            embedder,
            show_progress=show_progress,
            options=ingest_options(settings),
        )
        return index
    try:
        index = FaqIndex.load(directory)
    except IndexLoadError:
        pass
    else:
        # Embedded by another model than the one serving (a retrieval model promoted or
        # rolled back since): embed it again with this one.
        return index_for(embedder, index, directory)
    print("No FAQ imported yet: loading the sample FAQ (Northwind Outfitters).", file=sys.stderr)
    index, _ = import_faq(directory, [SAMPLE_FAQ], embedder, show_progress=show_progress)
    if index.thresholds.calibrated_from is None and SAMPLE_QUERIES.exists():
        index = calibrate_index(directory, index, embedder, SAMPLE_QUERIES)
    return index
