"""Teach the embedder the deployment's FAQ: a contrastive fine-tune on its own phrasings.

Every FAQ entry with alternate phrasings, every labelled query staff wrote for an entry,
says "these texts mean the same thing". The fine-tune pulls them together and pushes other
entries' texts away: MultipleNegativesRankingLoss (in-batch negatives), each batch holding
at most one pair per entry so no negative is secretly a positive. On CPU it takes seconds
to minutes (all-MiniLM-L6-v2, one to a few hundred steps).

Whether it helps is measured before it is kept: a share of the alternates is held out,
a model is trained on the rest at each of a few learning rates, and the base and those
models search the held-out phrasings against an index without them. How hard a FAQ can be
pushed differs (a small FAQ over-fits at a rate a larger one needs), so the rate with the
best held-out MRR trains the model kept (again, on every pair), and only if it gains on
the base; otherwise the base model serves. The learned model
is named by a digest of its base, its training pairs and its options, so the same FAQ
learns the same model once and an index embedded with it stays valid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.embedder import Embedder
from retrieval.faq import FaqEntry

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

LEARNED_MARK = "+faq-"  # learned model names: "<base>+faq-<digest>"


@dataclass(frozen=True, slots=True)
class LearnOptions:
    """How the embedder is fine-tuned on the FAQ."""

    epochs: int = field(default=3, metadata={"help": "passes over the training pairs"})
    batch_size: int = field(default=32, metadata={"help": "pairs per step (in-batch negatives)"})
    learning_rates: tuple[float, ...] = field(
        default=(3e-5, 1e-4),
        metadata={"help": "AdamW learning rates tried on the held-out check; the best is kept"},
    )
    scale: float = field(default=20.0, metadata={"help": "similarity scale of the loss"})
    holdout: float = field(
        default=0.2, metadata={"help": "share of alternates held out to check the gain"}
    )
    min_gain: float = field(
        default=0.005, metadata={"help": "held-out MRR gain needed to keep the learned model"}
    )
    min_pairs: int = field(default=20, metadata={"help": "fewer training pairs: no learning"})
    max_pairs: int = field(default=20_000, metadata={"help": "cap on pairs per epoch"})
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.learning_rates:
            raise ValueError("LearnOptions.learning_rates needs at least one learning rate")

    def key(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass(frozen=True, slots=True)
class Pair:
    """A text and the entry it means (`entry` indexes the entry list)."""

    text: str
    entry: int


@dataclass(frozen=True, slots=True)
class LearnResult:
    """What a `learn` did: `model_dir` is None when the base model stays."""

    model_dir: Path | None
    name: str
    pairs: int
    seconds: float
    base_mrr: float
    learned_mrr: float
    base_recall_at_1: float
    learned_recall_at_1: float
    held_out: int
    reason: str
    learning_rate: float = 0.0  # the one chosen on the held-out check (0: none trained)

    @property
    def kept(self) -> bool:
        return self.model_dir is not None

    def to_json(self) -> dict[str, object]:
        data = dataclasses.asdict(self)
        data["model_dir"] = str(self.model_dir) if self.model_dir else None
        return data


def training_pairs(
    entries: Sequence[FaqEntry], labelled: Sequence[tuple[str, str]] = ()
) -> list[Pair]:
    """Alternates of every FAQ entry (not passages) and labelled (text, entry id) pairs."""
    position = {entry.id: number for number, entry in enumerate(entries)}
    pairs = [
        Pair(text, number)
        for number, entry in enumerate(entries)
        if not entry.is_passage
        for text in entry.alternates
        if text.strip() and text != entry.question
    ]
    pairs += [Pair(text, position[eid]) for text, eid in labelled if eid in position]
    return pairs


def learned_name(
    base: str, entries: Sequence[FaqEntry], pairs: Sequence[Pair], options: LearnOptions
) -> str:
    """A name that changes when anything the learned model depends on changes."""
    digest = hashlib.sha256(f"{base}\x00{options.key()}".encode())
    for entry in entries:
        digest.update(f"\x00{entry.id}\x00{entry.question}".encode())
    for pair in pairs:
        digest.update(f"\x01{pair.text}\x00{pair.entry}".encode())
    return f"{base.rsplit('/', 1)[-1]}{LEARNED_MARK}{digest.hexdigest()[:12]}"


def fine_tune(
    base_location: str,
    entries: Sequence[FaqEntry],
    pairs: Sequence[Pair],
    options: LearnOptions,
    out_dir: Path,
    progress: Callable[[int, int], None] | None = None,
    learning_rate: float | None = None,
) -> None:
    """Fine-tune the sentence-transformers model at `base_location` and save it to out_dir
    (at `learning_rate`, else the first of the options' rates).

    Each pair's text is the anchor; its positive is the entry's question or another of
    its phrasings (picked at random each epoch); the other positives of the batch are
    the negatives.
    """
    import torch
    from sentence_transformers import SentenceTransformer

    random.seed(options.seed)
    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    model = SentenceTransformer(base_location, device="cpu")
    phrasings: dict[int, list[str]] = {}
    for pair in pairs:
        phrasings.setdefault(pair.entry, [entries[pair.entry].question]).append(pair.text)
    epochs = [_batches(pairs, options, rng) for _ in range(options.epochs)]  # see planned_steps
    steps = sum(len(batches) for batches in epochs)
    rate = options.learning_rates[0] if learning_rate is None else learning_rate
    optimizer = torch.optim.AdamW(model.parameters(), lr=rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(1, steps // 10)) * (1 - step / steps)
    )
    model.train()
    done = 0
    for batches in epochs:
        for batch in batches:
            anchors = [pair.text for pair in batch]
            positives = [
                rng.choice([t for t in phrasings[pair.entry] if t != pair.text] or [pair.text])
                for pair in batch
            ]
            left = _embed(model, anchors)
            right = _embed(model, positives)
            logits = options.scale * left @ right.T
            labels = torch.arange(len(batch))
            loss = (
                torch.nn.functional.cross_entropy(logits, labels)
                + torch.nn.functional.cross_entropy(logits.T, labels)
            ) / 2
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            done += 1
            if progress is not None:
                progress(done, steps)
    model.eval()
    model.save(str(out_dir))


def _embed(model: Any, texts: list[str]) -> torch.Tensor:
    import torch

    prepare = getattr(model, "preprocess", None) or model.tokenize  # renamed in v5
    output = model(prepare(texts))
    embedded: torch.Tensor = torch.nn.functional.normalize(output["sentence_embedding"], dim=-1)
    return embedded


def planned_steps(pairs: Sequence[Pair], options: LearnOptions) -> int:
    """The optimizer steps `fine_tune` will take on `pairs`: its batches are drawn first
    from a generator seeded with `options.seed`, as here."""
    rng = random.Random(options.seed)
    return sum(len(_batches(pairs, options, rng)) for _ in range(options.epochs))


def _batches(pairs: Sequence[Pair], options: LearnOptions, rng: random.Random) -> list[list[Pair]]:
    """Shuffled batches with at most one pair per entry each (no false negatives)."""
    order = list(pairs)
    rng.shuffle(order)
    order = order[: options.max_pairs]
    batches: list[list[Pair]] = []
    open_batches: list[tuple[list[Pair], set[int]]] = []
    for pair in order:
        for batch, used in open_batches:
            if pair.entry not in used:
                batch.append(pair)
                used.add(pair.entry)
                if len(batch) == options.batch_size:
                    batches.append(batch)
                    open_batches.remove((batch, used))
                break
        else:
            open_batches.append(([pair], {pair.entry}))
    batches += [batch for batch, _ in open_batches if len(batch) > 1]
    rng.shuffle(batches)
    return batches


def _held_out_ranks(
    embedder: Embedder, entries: Sequence[FaqEntry], held: Sequence[Pair]
) -> tuple[float, float]:
    """(MRR, recall@1) of the held-out phrasings searched against `entries`."""
    from retrieval.index import FaqIndex

    index = FaqIndex.build(entries, embedder)
    vectors = embedder.encode([pair.text for pair in held])
    reciprocal, first = [], []
    for pair, vector in zip(held, vectors, strict=True):
        ids = [hit.id for hit in index.search(pair.text, vector, k=10)]
        wanted = entries[pair.entry].id
        rank = ids.index(wanted) + 1 if wanted in ids else None
        reciprocal.append(1 / rank if rank else 0.0)
        first.append(rank == 1)
    return float(np.mean(reciprocal)), float(np.mean(first))


def learn(
    base: Embedder,
    entries: Sequence[FaqEntry],
    cache_dir: Path,
    labelled: Sequence[tuple[str, str]] = (),
    options: LearnOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> LearnResult:
    """Fine-tune `base` on the FAQ's phrasings (and `labelled` (text, entry id) pairs), keep
    the result under `cache_dir/<name>/` if held-out phrasings are found better with it.

    A model already learned from the same data is reused (`result.json` beside it).
    """
    options = options or LearnOptions()
    pairs = training_pairs(entries, labelled)
    name = learned_name(base.name, entries, pairs, options)
    target = cache_dir / name
    if (target / "result.json").exists():
        data = json.loads((target / "result.json").read_text())
        data["model_dir"] = Path(data["model_dir"]) if data["model_dir"] else None
        return LearnResult(**data)
    start = time.perf_counter()
    if len(pairs) < options.min_pairs:
        return LearnResult(
            None, base.name, len(pairs), 0.0, 0, 0, 0, 0, 0,
            f"{len(pairs)} training phrasings (alternates, labelled queries): at least "
            f"{options.min_pairs} are needed to learn from; the base model serves",
        )  # fmt: skip
    rng = random.Random(options.seed)
    rows = list(range(len(pairs)))
    rng.shuffle(rows)
    held_rows = set(rows[: max(1, int(options.holdout * len(rows)))])
    held = [pairs[i] for i in sorted(held_rows)]
    kept = [pair for i, pair in enumerate(pairs) if i not in held_rows]
    held_texts = {(pair.entry, pair.text) for pair in held}
    check_entries = [
        dataclasses.replace(
            entry, alternates=tuple(t for t in entry.alternates if (n, t) not in held_texts)
        )
        for n, entry in enumerate(entries)
    ]
    cache_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".learn-", dir=cache_dir))
    try:
        base_mrr, base_r1 = _held_out_ranks(base, check_entries, held)
        # One bar over every fine-tune: a check per learning rate and, if one helps, the
        # model kept (on every pair); each one's step count is known before it starts.
        check_steps = planned_steps(kept, options)
        total = check_steps * len(options.learning_rates) + planned_steps(pairs, options)
        finished = 0

        def report(done: int, steps: int) -> None:
            if progress is not None:
                progress(finished + done, total)

        checks: list[tuple[float, float, float]] = []  # (MRR, recall@1, rate)
        for stage, rate in enumerate(options.learning_rates):
            out = staging / f"check-{stage}"
            fine_tune(base.location, check_entries, kept, options, out, report, rate)
            finished += check_steps
            check = Embedder(f"{base.name}+check-{stage}", location=str(out))
            checks.append((*_held_out_ranks(check, check_entries, held), rate))
            shutil.rmtree(out, ignore_errors=True)
        learned_mrr, learned_r1, rate = max(checks, key=lambda check: check[0])
        gain = learned_mrr - base_mrr
        tried = ", ".join(f"{r:g}: MRR {m:.3f}" for m, _, r in checks)
        figures = (
            f"held-out phrasings ({len(held)}): MRR {base_mrr:.3f} -> {learned_mrr:.3f}, "
            f"recall@1 {base_r1:.3f} -> {learned_r1:.3f} (learning rate {rate:g}; tried {tried})"
        )
        model_dir: Path | None = None
        if gain >= options.min_gain:
            fine_tune(base.location, entries, pairs, options, staging / "model", report, rate)
            model_dir = target / "model"
            reason = f"learned model kept: {figures}"
        else:
            reason = f"base model kept (gain under {options.min_gain}): {figures}"
            if progress is not None:  # nothing left to train: the bar ends full
                progress(total, total)
        result = LearnResult(
            model_dir,
            name if model_dir else base.name,
            len(pairs),
            round(time.perf_counter() - start, 1),
            round(base_mrr, 4),
            round(learned_mrr, 4),
            round(base_r1, 4),
            round(learned_r1, 4),
            len(held),
            reason,
            rate if model_dir else 0.0,
        )
        (staging / "result.json").write_text(json.dumps(result.to_json(), indent=2))
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s", result.reason)
    return result
