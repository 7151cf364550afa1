"""Retrieval benchmark: dense-only vs hybrid on the shared dev sets.

Out-of-scope figures use thresholds from deskmate's own calibration, fitted on one half
of the queries and measured on the other (2-fold, both ways, averaged), so no figure is
measured on the data it was tuned on.

    python -m bench.retrieval [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.embedder import Embedder
from retrieval.evaluation import ScoredQuery, calibrate, load_queries, report, run_queries
from retrieval.faq import load_faq
from retrieval.index import FaqIndex, SearchMode
from retrieval.retriever import Retriever

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
DATASETS = ("stackfaq", "banking77-oos", "grounded")


@dataclass(frozen=True)
class Row:
    dataset: str
    mode: str
    recall_at_1: float
    recall_at_5: float
    mrr: float
    oos_f1: float | None
    p50_ms: float
    p95_ms: float


def two_fold_oos_f1(scored: list[ScoredQuery], seed: int = 0) -> float | None:
    """OOS F1 with thresholds calibrated on the other half, averaged over both halves."""
    if not any(s.query.out_of_scope for s in scored):
        return None
    order = list(range(len(scored)))
    random.Random(seed).shuffle(order)
    halves = [[scored[i] for i in order[::2]], [scored[i] for i in order[1::2]]]
    f1s = []
    for fit, test in (halves, halves[::-1]):
        thresholds = calibrate(fit, "bench half")
        f1s.append(report(test, thresholds).oos_f1)
    return float(np.mean(f1s))


def run(data: Path) -> list[Row]:
    embedder = Embedder()
    rows = []
    for name in DATASETS:
        entries = load_faq([data / name / "faqs.jsonl"])
        queries = load_queries(data / name / "queries-dev.jsonl")
        retriever = Retriever(embedder, FaqIndex.build(entries, embedder))
        retriever.search("warm up")
        modes: tuple[SearchMode, ...] = ("dense", "hybrid")
        runs: list[tuple[SearchMode, str, bool]] = [(mode, mode, True) for mode in modes]
        if any(query.history for query in queries):  # multi-turn: what the context adds
            runs = [
                ("dense", "dense, in context", True),
                ("hybrid", "hybrid, question alone", False),
                ("hybrid", "hybrid, in context", True),
            ]
        for mode, label, with_history in runs:
            scored = run_queries(retriever, queries, mode=mode, with_history=with_history)
            result = report(scored, retriever.index.thresholds)
            rows.append(
                Row(
                    name,
                    label,
                    result.recall_at_1,
                    result.recall_at_5,
                    result.mrr,
                    two_fold_oos_f1(scored),
                    result.p50_ms,
                    result.p95_ms,
                )
            )
    return rows


def table(rows: list[Row]) -> str:
    lines = [
        "| dataset | mode | recall@1 | recall@5 | MRR | OOS F1 (2-fold calibrated) "
        "| p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        oos = "n/a (no OOS queries)" if r.oos_f1 is None else f"{r.oos_f1:.3f}"
        lines.append(
            f"| {r.dataset} | {r.mode} | {r.recall_at_1:.3f} | {r.recall_at_5:.3f} | "
            f"{r.mrr:.3f} | {oos} | {r.p50_ms:.1f} | {r.p95_ms:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    args = parser.parse_args(argv)
    print(table(run(args.data)))


if __name__ == "__main__":
    main()
