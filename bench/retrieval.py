"""Retrieval benchmark: the base embedder vs the one learned from each FAQ, on the dev sets.

Each set's FAQ is imported as `deskmate faq import` does by default: the embedder is
fine-tuned on the FAQ's alternates (retrieval.learning; kept only when held-out alternates
are found better) and the queries are searched with what would serve. The dev queries are
never learnt from. Out-of-scope figures are cross-validated as `deskmate eval retrieval`
does: each query is judged by thresholds calibrated on the other folds (5-fold).

    python -m bench.retrieval [--data ../shared/data] [--sets stackfaq banking77-oos]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from retrieval.embedder import Embedder
from retrieval.evaluation import cross_validated_oos, load_queries, report, run_queries
from retrieval.faq import load_faq
from retrieval.index import FaqIndex, SearchMode
from retrieval.learning import learn
from retrieval.retriever import Retriever

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DATASETS = ("stackfaq", "banking77-oos")  # grounded: add with --sets (4,299 entries, slow)


@dataclass(frozen=True)
class Row:
    dataset: str
    embedder: str
    recall_at_1: float
    recall_at_5: float
    mrr: float
    oos_f1: float | None
    p50_ms: float
    p95_ms: float
    learning: str


def evaluate(
    name: str, embedder: Embedder, data: Path, learning: str, mode: SearchMode = "hybrid"
) -> Row:
    entries = load_faq([data / name / "faqs.jsonl"])
    queries = load_queries(data / name / "queries-dev.jsonl")
    retriever = Retriever(embedder, FaqIndex.build(entries, embedder))
    retriever.search("warm up")
    scored = run_queries(retriever, queries, mode=mode)
    predicted = cross_validated_oos(scored)
    result = report(scored, retriever.index.thresholds, predicted)
    has_oos = any(query.out_of_scope for query in queries)
    return Row(
        name,
        embedder.name,
        result.recall_at_1,
        result.recall_at_5,
        result.mrr,
        result.oos_f1 if has_oos else None,
        result.p50_ms,
        result.p95_ms,
        learning,
    )


def run(data: Path, sets: tuple[str, ...] = DATASETS, cache: Path | None = None) -> list[Row]:
    base = Embedder()
    cache = cache or Path(tempfile.mkdtemp(prefix="bench-learn-"))
    rows = []
    for name in sets:
        rows.append(evaluate(name, base, data, "-"))
        result = learn(base, load_faq([data / name / "faqs.jsonl"]), cache)
        if result.kept:
            learned = Embedder(result.name, location=str(result.model_dir))
            summary = f"{result.pairs} pairs, {result.seconds:.0f} s; {result.reason}"
            rows.append(evaluate(name, learned, data, summary))
        else:  # the base model serves: the same figures
            rows.append(replace(rows[-1], embedder="learned: base kept", learning=result.reason))
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| dataset | embedder | recall@1 | recall@5 | MRR | OOS F1 (5-fold CV) "
        "| p50 ms | p95 ms | learning |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        oos = "n/a (no OOS queries)" if r.oos_f1 is None else f"{r.oos_f1:.3f}"
        lines.append(
            f"| {r.dataset} | {r.embedder} | {r.recall_at_1:.3f} | {r.recall_at_5:.3f} | "
            f"{r.mrr:.3f} | {oos} | {r.p50_ms:.1f} | {r.p95_ms:.1f} | {r.learning} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument("--sets", nargs="+", default=list(DATASETS), help="dev sets to run")
    parser.add_argument("--cache", type=Path, help="where learned models are kept (reused)")
    args = parser.parse_args(argv)
    print(table(run(args.data, tuple(args.sets), args.cache)))


if __name__ == "__main__":
    main()
