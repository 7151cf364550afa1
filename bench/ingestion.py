"""Knowledge import benchmark: documents and passages per second, a re-sync with one
changed document out of N, and memory of the index at many passages.

    python -m bench.ingestion [--documents 1000] [--memory-passages 10000 25000]

Documents are synthetic Markdown help articles (an H1 title, a short intro and four
sections of three sentences, drawn from a support vocabulary with a fixed seed), written
to a temporary folder and imported through the same code as `deskmate faq import`.
Memory at many passages is measured on indexes built from synthetic passages with random
unit vectors (embedding 100,000 passages would take hours on 2 CPU cores; the vectors'
values do not change the memory) and extrapolated linearly to 100,000.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bots.indexing import import_knowledge
from retrieval.embedder import Embedder, Vectors
from retrieval.faq import FaqEntry
from retrieval.index import FaqIndex, _text_key
from retrieval.knowledge.sources import collect

TOPICS = ["returns", "refunds", "shipping", "delivery", "warranty", "subscription", "invoice",
          "payment", "account", "password", "gift card", "voucher", "order", "parcel",
          "descaling", "grinder", "filter", "loyalty points", "privacy", "cookies"]  # fmt: skip
VERBS = ["covers", "includes", "requires", "excludes", "allows", "limits", "explains"]
DETAILS = ["within {n} days", "for {n} euros", "after {n} working days", "up to {n} items",
           "once every {n} weeks", "for orders over {n} euros", "in {n} countries"]  # fmt: skip
PRODUCTS = ["espresso machine", "milk frother", "coffee beans", "travel mug", "kettle",
            "descaling tablets", "water filter", "burr grinder", "cold brew kit"]  # fmt: skip


def _sentence(rng: random.Random) -> str:
    detail = rng.choice(DETAILS).format(n=rng.randint(2, 90))
    return (
        f"The {rng.choice(TOPICS)} policy {rng.choice(VERBS)} the {rng.choice(PRODUCTS)} "
        f"{detail}, and customers with code {rng.randint(1000, 9999)} should "
        f"{rng.choice(['contact support', 'check their account', 'keep the receipt'])}."
    )


def article(number: int, seed: int = 0) -> str:
    rng = random.Random(f"{seed}-{number}")
    lines = [f"# Article {number}: {rng.choice(TOPICS)} and {rng.choice(PRODUCTS)}", ""]
    lines += [_sentence(rng), ""]
    for section in range(4):
        lines += [f"## {rng.choice(TOPICS).capitalize()} question {section + 1}", ""]
        lines += [" ".join(_sentence(rng) for _ in range(3)), ""]
    return "\n".join(lines)


class CountingEmbedder(Embedder):
    """The real embedder, counting the texts it embeds."""

    def __init__(self, real: Embedder) -> None:
        self._real = real
        self.name = real.name
        self.dimension = real.dimension
        self.texts = 0

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        progress: Callable[[int], None] | None = None,
    ) -> Vectors:
        self.texts += len(texts)
        return self._real.encode(texts, batch_size, progress)


@dataclass(frozen=True)
class Throughput:
    documents: int
    passages: int
    read_seconds: float
    import_seconds: float
    texts_embedded: int


def write_articles(folder: Path, documents: int) -> None:
    folder.mkdir()
    for number in range(documents):
        (folder / f"article-{number:05d}.md").write_text(article(number))


def throughput(documents: int, embedder: Embedder) -> Throughput:
    """Read + split alone, then a first full import (everything embedded)."""
    counting = CountingEmbedder(embedder)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        write_articles(folder, documents)
        started = time.perf_counter()
        entries, _ = collect([folder])
        read_seconds = time.perf_counter() - started
        started = time.perf_counter()
        _, _, report = import_knowledge(
            Path(tmp) / "index", [folder], counting, show_progress=False
        )
        import_seconds = time.perf_counter() - started
    return Throughput(report.documents, len(entries), read_seconds, import_seconds, counting.texts)


@dataclass(frozen=True)
class Resync:
    documents: int
    passages: int
    unchanged_seconds: float
    seconds: float
    texts_embedded: int
    passages_changed: int


def resync(documents: int, embedder: Embedder) -> Resync:
    """A sync of N documents of which one changed, against an index that already holds
    the other N-1. The first index gets random vectors under the embedder's name (its
    values do not matter to what a re-sync does), so N=1,000 needs no hour of embedding;
    the re-sync itself is the real thing."""
    counting = CountingEmbedder(embedder)
    with tempfile.TemporaryDirectory() as tmp:
        folder, directory = Path(tmp) / "docs", Path(tmp) / "index"
        write_articles(folder, documents)
        entries, _ = collect([folder])
        keys, owners, texts = [], [], []
        for owner, entry in enumerate(entries):
            for text in entry.search_texts:
                keys.append(_text_key(embedder.name, text))
                owners.append(owner)
                texts.append(text)
        vectors = np.random.default_rng(0).standard_normal(
            (len(keys), embedder.dimension), dtype=np.float32
        )
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = FaqIndex(
            entries,
            np.asarray(owners, dtype=np.int64),
            keys,
            vectors,
            embedder.name,
            sources=[str(folder.resolve())],
        )
        index.save(directory)
        started = time.perf_counter()
        import_knowledge(directory, [folder], counting, show_progress=False)
        unchanged_seconds = time.perf_counter() - started
        page = folder / f"article-{documents // 2:05d}.md"
        lines = page.read_text().splitlines()
        lines[6] = lines[6].replace("policy", "rule", 1)  # one sentence of one section
        page.write_text("\n".join(lines))
        counting.texts = 0
        started = time.perf_counter()
        after, rebuilt, _ = import_knowledge(directory, [folder], counting, show_progress=False)
        seconds = time.perf_counter() - started
        assert rebuilt
        before = {e.id: e.answer for e in entries}
        changed = sum(before.get(e.id) != e.answer for e in after.entries)
    return Resync(documents, len(entries), unchanged_seconds, seconds, counting.texts, changed)


def _rss() -> int:
    """Resident memory of this process now, in bytes (Linux /proc)."""
    gc.collect()
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark reads Linux memory)")


def memory(passages: int, dimension: int = 384) -> tuple[int, float, float]:
    """(passages, MB of RSS the built index adds, MB on disk) with random unit vectors."""
    rng = random.Random(passages)
    entries = []
    per_article = 5
    for number in range(passages // per_article):
        blocks = article(number, seed=7).split("\n\n")
        for part in range(per_article):
            body = blocks[1] if part == 0 else blocks[2 * part + 1]
            entries.append(
                FaqEntry(
                    id=f"doc-{number}#s{part}",
                    question=f"Article {number} › Section {part}",
                    answer=body,
                    url=f"https://help.example.com/a/{number}#s{part}",
                    document=f"docs/article-{number}.md",
                )
            )
    keys, owners = [], []
    for owner, entry in enumerate(entries):
        for text in entry.search_texts:
            keys.append(_text_key("bench", text))
            owners.append(owner)
    generator = np.random.default_rng(rng.randint(0, 1 << 30))
    before = _rss()
    vectors = generator.standard_normal((len(keys), dimension), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = FaqIndex(entries, np.asarray(owners, dtype=np.int64), keys, vectors, "bench")
    added = (_rss() - before) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp) / "index")
        disk = sum(f.stat().st_size for f in (Path(tmp) / "index").iterdir()) / 1e6
    del index, vectors
    return len(entries), added, disk


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--documents", type=int, default=100, help="synthetic documents embedded from scratch"
    )
    parser.add_argument(
        "--resync-documents", type=int, default=1000, help="documents in the re-sync test"
    )
    parser.add_argument(
        "--memory-passages", type=int, nargs="*", default=[20_000, 50_000], metavar="N"
    )
    args = parser.parse_args(argv)
    embedder = Embedder()
    embedder.encode(["warm up"])
    t = throughput(args.documents, embedder)
    print("| measure | value |")
    print("|---|---|")
    print(
        f"| read + split, {t.documents} documents -> {t.passages} passages (no embedding) "
        f"| {t.read_seconds:.2f} s: {t.documents / t.read_seconds:.0f} documents/s, "
        f"{t.passages / t.read_seconds:.0f} passages/s |"
    )
    print(
        f"| first import of the same, embedding {t.texts_embedded} texts | "
        f"{t.import_seconds:.1f} s: {t.documents / t.import_seconds:.1f} documents/s, "
        f"{t.passages / t.import_seconds:.1f} passages/s |"
    )
    r = resync(args.resync_documents, embedder)
    print(
        f"| re-sync of {r.documents} documents ({r.passages} passages), none changed | "
        f"{r.unchanged_seconds:.1f} s, nothing embedded, index not rewritten |"
    )
    print(
        f"| re-sync of {r.documents} documents, one sentence of one changed | "
        f"{r.seconds:.1f} s, {r.texts_embedded} text(s) embedded, "
        f"{r.passages_changed} passage(s) changed |"
    )
    for passages in args.memory_passages:
        count, added, disk = memory(passages)
        print(
            f"| index in memory at {count:,} passages (random vectors) | +{added:.0f} MB RSS, "
            f"{disk:.0f} MB on disk; linear to 100,000: ~{added * 100_000 / count:.0f} MB |"
        )


if __name__ == "__main__":
    main()
