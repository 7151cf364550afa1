"""The fixture help center (12 pages, overlapping topics): customers' questions find the
right section. Real MiniLM embedder, the index as served."""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.embedder import Embedder
from retrieval.index import FaqIndex
from retrieval.knowledge.sources import collect
from retrieval.retriever import Retriever

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


def test_recall_at_1_of_the_right_section_is_at_least_0_9(embedder: Embedder) -> None:
    entries, report = collect([FIXTURES / "help_center"])
    assert report.documents == 12 and not report.skipped
    retriever = Retriever(embedder, FaqIndex.build(entries, embedder))
    queries = [json.loads(line) for line in (FIXTURES / "help_center_queries.jsonl").open()]
    hits = 0
    for query in queries:
        best = retriever.search(query["query"], k=1)[0].entry
        assert best.document is not None
        hits += best.document.endswith(query["document"]) and best.title.endswith(query["section"])
    assert len(queries) >= 20
    assert hits / len(queries) >= 0.9
