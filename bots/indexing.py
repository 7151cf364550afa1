"""Building, loading and calibrating the FAQ index from settings."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bots.progress import progress_bar
from brain.settings import SAMPLE_FAQ, Settings
from retrieval.embedder import Embedder
from retrieval.evaluation import calibrate, load_queries, run_queries
from retrieval.faq import load_faq
from retrieval.index import FaqIndex, IndexLoadError, rebuild
from retrieval.retriever import Retriever

log = logging.getLogger(__name__)
SAMPLE_QUERIES = SAMPLE_FAQ.with_name("queries.jsonl")


def import_faq(
    directory: Path,
    paths: Sequence[Path],
    embedder: Embedder,
    *,
    show_progress: bool = True,
) -> tuple[FaqIndex, bool]:
    """Load and validate every file first (nothing is imported half-way), then rebuild."""
    entries = load_faq(paths)
    with progress_bar("Embedding FAQ", show_progress) as update:
        return rebuild(
            directory,
            entries,
            embedder,
            progress=update,
            sources=[str(Path(p).resolve()) for p in paths],
        )


def calibrate_index(
    directory: Path, index: FaqIndex, embedder: Embedder, queries_path: Path
) -> FaqIndex:
    """Fit thresholds on labelled queries and store them with the index."""
    queries = load_queries(queries_path)
    scored = run_queries(Retriever(embedder, index), queries)
    calibrated = index.with_thresholds(calibrate(scored, str(queries_path)))
    calibrated.save(directory)
    return calibrated


def ensure_index(settings: Settings, embedder: Embedder, show_progress: bool = True) -> FaqIndex:
    """The index to serve: from DESKMATE_FAQ if set, else the imported one, else the sample."""
    directory = settings.index_dir
    if settings.faq:
        index, _ = import_faq(directory, settings.faq, embedder, show_progress=show_progress)
        return index
    try:
        return FaqIndex.load(directory)
    except IndexLoadError:
        pass
    print("No FAQ imported yet: loading the sample FAQ (Northwind Outfitters).", file=sys.stderr)
    index, _ = import_faq(directory, [SAMPLE_FAQ], embedder, show_progress=show_progress)
    if index.thresholds.calibrated_from is None and SAMPLE_QUERIES.exists():
        index = calibrate_index(directory, index, embedder, SAMPLE_QUERIES)
    return index
