"""Answers in conversation: quote, the base model and a fine-tuned adapter side by side.

Each labelled turn of the grounded dev set (multi-turn dialogues; `history` holds the
turns before it) goes through the whole brain in its own conversation, started from its
history in the real conversation store (an embedded Redis), as `deskmate eval answers`
does. Reported per backend: answered, citation accuracy (cites a relevant entry),
token-F1 and ROUGE-L against the person's reply, p50 time to answer.

The fine-tuned row is the bundled starter adapter, or `--adapter`. The starter learns from
the training transcripts and from three quarters of the dev dialogues (`make
starter-model`), so only the dev dialogues it held out are asked: those
`transcripts import --hold-out 0.25` keeps out (`--hold-out`, the same stable split).

    python -m bench.conversations [--limit 150] [--hold-out 0.25] [--adapter RUN_DIR/adapter]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from bots.app import make_backend
from brain.answering.model_loading import starter_adapter
from brain.conversations import ConversationStore
from brain.evaluation.answers import AnswerReport, evaluate_answers
from brain.pipeline import Brain
from brain.redis_server import open_redis
from brain.settings import NO_ADAPTER, Settings
from retrieval.embedder import Embedder
from retrieval.evaluation import load_queries
from retrieval.faq import load_faq
from retrieval.index import FaqIndex
from retrieval.retriever import Retriever
from training.importers import holds_out

STARTER_HOLD_OUT = 0.25  # the Makefile's STARTER_HOLD_OUT: the dev dialogues the starter never saw
DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"


async def run(
    data: Path,
    limit: int,
    adapter: Path | None,
    data_dir: Path,
    base: bool = True,
    hold_out: float = STARTER_HOLD_OUT,
) -> list[tuple[str, AnswerReport]]:
    dev = load_queries(data / "grounded" / "queries-dev.jsonl")
    queries = [q for q in dev if not hold_out or holds_out(q, hold_out)][:limit]
    embedder = Embedder()
    index = FaqIndex.build(load_faq([data / "grounded" / "faqs.jsonl"]), embedder)
    backends: list[tuple[str, dict[str, str]]] = [("quote", {"DESKMATE_MODEL_BACKEND": "quote"})]
    if base:
        bare = {"DESKMATE_MODEL_BACKEND": "hf", "DESKMATE_MODEL_ADAPTER": NO_ADAPTER}
        backends.append(("hf, base model", bare))
    if adapter is not None:
        hf_tuned = {"DESKMATE_MODEL_BACKEND": "hf", "DESKMATE_MODEL_ADAPTER": str(adapter)}
        backends.append(("hf, fine-tuned", hf_tuned))
    elif starter_adapter() is not None:
        backends.append(("hf, starter adapter (default)", {"DESKMATE_MODEL_BACKEND": "hf"}))
    rows: list[tuple[str, AnswerReport]] = []
    async with open_redis(None, data_dir) as redis:
        for name, env in backends:
            settings = Settings.load({"DESKMATE_DATA_DIR": str(data_dir), **env})
            backend = await make_backend(settings, embedder)
            store = ConversationStore(redis, prefix=f"bench:{len(rows)}:")
            brain = Brain(Retriever(embedder, index, top_k=settings.top_k), store, backend)
            try:
                rows.append((name, await evaluate_answers(brain, queries)))
            finally:
                await backend.aclose()
    return rows


def table(rows: list[tuple[str, AnswerReport]]) -> str:
    lines = [
        "| backend | turns | answered | cites a relevant entry | token-F1 | ROUGE-L | p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.n} | {r.answered:.3f} | {r.citation_accuracy:.3f} | "
            f"{r.token_f1:.3f} | {r.rouge_l:.3f} | {r.p50_ms:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data folder")
    parser.add_argument("--limit", type=int, default=150, help="first N turns asked (default 150)")
    parser.add_argument(
        "--hold-out",
        type=float,
        default=STARTER_HOLD_OUT,
        help="ask the dev dialogues this share holds out (default 0.25, as `make "
        "starter-model`; 0 = every dev turn)",
    )
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter from `deskmate train`")
    parser.add_argument("--data-dir", type=Path, help="where the model is converted (cached)")
    parser.add_argument("--no-base", action="store_true", help="skip the base model (slow)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data_dir or Path(scratch)
        rows = asyncio.run(
            run(args.data, args.limit, args.adapter, data_dir, not args.no_base, args.hold_out)
        )
        print(table(rows))


if __name__ == "__main__":
    main()
