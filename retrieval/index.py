"""The FAQ index: dense vectors in FAISS fused with a BM25 keyword score.

Every phrasing of an entry (question and alternates) is embedded and counts for its entry
(an entry with several is ranked by the mean of its two most similar to the question),
and so does every sentence of a passage (an entry whose title is not a question: a review,
a note); the keyword side indexes each entry's question, alternates and answer together,
which catches product names, codes and numbers that embeddings blur.

A search can be read in the context of a conversation (`context`: the recent turns,
oldest first): entries that fit what the conversation is about (the hotel, order or
product named turns ago) rank first, and the question's own words pick the detail. The
index is saved with its metadata and a content hash, and a rebuild embeds only texts it
has not seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import bm25s
import faiss
import numpy as np
import numpy.typing as npt
import Stemmer
from scipy import sparse
from threadpoolctl import ThreadpoolController

from retrieval.confidence import Thresholds as Thresholds  # re-exported: its old home
from retrieval.embedder import Embedder, Vectors
from retrieval.faq import FaqEntry

FORMAT_VERSION = 1
# The labelled questions' vectors (retrieval.confidence.LabelledExamples), beside meta.json.
EXAMPLES_FILE = "examples.npy"
# What gets embedded per entry (see FaqEntry.search_texts); part of the content hash, so
# an index built before passages were searched sentence by sentence is rebuilt.
SEARCH_TEXTS = "phrasings+passage-sentences"
HNSW_ABOVE = 20_000  # phrasings; below this an exact flat search is fast and exact
DEFAULT_KEYWORD_WEIGHT = 0.2
BM25_SATURATION = 5.0  # a BM25 score of this much maps to a keyword score of 0.5
# Conversation context, tuned on multi-turn dev dialogues (bench/retrieval.py): each turn
# counts half as much as the one after it; how much fitting the conversation moves an
# entry up the ranking (dense and keyword), and how much it adds to the confidence.
# A question searched alone against the whole knowledge: the more sentences a passage
# has, the likelier one matches by chance, so a sentence's similarity counts this much
# times ln(sentences) less. In a conversation's context (below) the subject already
# narrows the candidates and a sentence counts fully. Tuned on the dev sets: one-shot
# FAQ recall stays where phrasings alone put it, passages still answer details.
PASSAGE_SENTENCE_PENALTY = 0.04
CONTEXT_DECAY = 0.5
SUBJECT_WORD_MAX_SHARE = 0.02  # an answer's keywords count if in at most 2 % of the entries
CONTEXT_DENSE_WEIGHT = 0.6
CONTEXT_KEYWORD_WEIGHT = 1.0
CONTEXT_CONFIDENCE = 0.15
# What the latest reply (the bot's or an agent's) already said is seldom what the customer
# asks next: an entry loses this much times the share of its answer's words that reply
# holds. Without it, a reply quoting an entry made that entry fit the conversation best,
# and follow-ups ("my payment was declined" after the payment-methods answer) got the same
# answer again. Tuned on the grounded dev dialogues (bench/retrieval.py) and the sample
# shop's follow-ups (bots/sample/follow-ups.jsonl); README, *Conversations*.
ANSWERED_PENALTY = 0.7
SearchMode = Literal["hybrid", "dense", "keyword"]
# numpy's BLAS keeps its worker threads spinning after a product; the embedder's torch
# threads, next in line, then run 4-5x slower (measured: 100 ms instead of 22 ms per
# search in context). The index's products are small: one BLAS thread does them.
_BLAS = ThreadpoolController()


class IndexLoadError(RuntimeError):
    """The saved index is missing, unreadable or from another format."""


@dataclass(frozen=True, slots=True)
class FaqHit:
    """One retrieved FAQ entry with its scores.

    `score` is the fused score, the policy's confidence; `dense` is the best cosine
    similarity of any phrasing (hits are ranked with an entry's several phrasings counting
    as the mean of their two best: `FaqIndex._entry_similarity`); `keyword` the BM25
    score squashed into 0..1 (score / (score + BM25_SATURATION)). `context` (0..1) is how
    well the entry fits the conversation so far, relative to the best-fitting entry (0
    without context); hits read in context are ranked by question and context together,
    and `score` is the question's own fused score plus CONTEXT_CONFIDENCE * context.
    """

    entry: FaqEntry
    score: float
    dense: float
    keyword: float
    context: float = 0.0
    # How the question compares with the deployment's labelled questions
    # (retrieval.confidence.NEIGHBOUR_FEATURES), the same on every hit of one search;
    # None when the thresholds keep no labelled questions.
    neighbours: tuple[float, ...] | None = None

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def title(self) -> str:
        return self.entry.title


@dataclass(frozen=True, slots=True)
class ContextTurn:
    """An earlier turn a question is read with. The customer's words all count as
    keywords; of an answer's (the bot's or an agent's, long and full of common words)
    only those that single out a few entries do: names, product codes."""

    text: str
    vector: Vectors
    customer: bool


def content_hash(entries: Sequence[FaqEntry], model: str) -> str:
    """Hash of the entries' content and the embedding model: equal hash, equal index."""
    digest = hashlib.sha256(f"{model}\x00{SEARCH_TEXTS}".encode())
    for entry in entries:
        digest.update(entry.content_hash().encode())
    return digest.hexdigest()


def _text_key(model: str, text: str) -> str:
    return hashlib.sha1(f"{model}\x00{text}".encode()).hexdigest()


_STEMMER = Stemmer.Stemmer("english")


def _tokenize(texts: list[str]) -> list[list[str]]:
    tokens = bm25s.tokenize(
        texts, stopwords="en", stemmer=_STEMMER, return_ids=False, show_progress=False
    )
    return [list(t) for t in tokens]


@dataclass(frozen=True, slots=True)
class _WordMatrix:
    """Which words each entry's answer holds: a row per entry, normalised to sum to 1, so a
    product with a text's 0/1 word vector is the share of the answer's words it holds."""

    vocabulary: dict[str, int]
    shares: sparse.csr_matrix

    def held_by(self, text: str) -> npt.NDArray[np.float32]:
        words = {self.vocabulary[t] for t in _tokenize([text])[0] if t in self.vocabulary}
        held = np.zeros(len(self.vocabulary), dtype=np.float32)
        held[list(words)] = 1.0
        return np.asarray(self.shares @ held, dtype=np.float32)


def _word_matrix(texts: list[list[str]]) -> _WordMatrix:
    vocabulary: dict[str, int] = {}
    rows, columns, values = [], [], []
    for row, tokens in enumerate(texts):
        words = {vocabulary.setdefault(token, len(vocabulary)) for token in tokens}
        if not words:  # an entry without an answer (intents, alternates only)
            continue
        rows += [row] * len(words)
        columns += sorted(words)
        values += [1.0 / len(words)] * len(words)
    shape = (len(texts), max(1, len(vocabulary)))
    shares = sparse.csr_matrix((values, (rows, columns)), shape=shape, dtype=np.float32)
    return _WordMatrix(vocabulary, shares)


class FaqIndex:
    """Search structure over FAQ entries; build with `build`, persist with `save`/`load`."""

    def __init__(
        self,
        entries: Sequence[FaqEntry],
        phrasing_entry: npt.NDArray[np.int64],
        phrasing_keys: Sequence[str],
        vectors: Vectors,
        model: str,
        thresholds: Thresholds | None = None,
        keyword_weight: float = DEFAULT_KEYWORD_WEIGHT,
        sources: Sequence[str] = (),
        saved_hash: str | None = None,
    ) -> None:
        self.entries = list(entries)
        self.phrasing_entry = phrasing_entry
        self.phrasing_keys = list(phrasing_keys)
        self.vectors = vectors
        self.model = model
        self.thresholds = thresholds or Thresholds()
        self.keyword_weight = keyword_weight
        self.sources = list(sources)
        # A loaded index keeps the hash it was built under: recomputing it would hide a
        # change in how entries are searched (SEARCH_TEXTS) or embedded.
        self._content_hash = saved_hash or content_hash(self.entries, self.model)
        self._row_of = {entry.id: row for row, entry in enumerate(self.entries)}
        # Each entry's rows are contiguous: its phrasings, then its passage sentences.
        counts = np.bincount(self.phrasing_entry, minlength=len(self.entries))
        self._row_start = np.cumsum(counts) - counts
        self._phrasing_count = np.array([len(e.phrasings) for e in self.entries], dtype=np.int64)
        self._sentence_count = counts - self._phrasing_count
        place = np.arange(len(self.phrasing_entry)) - self._row_start[self.phrasing_entry]
        self._is_phrasing = place < self._phrasing_count[self.phrasing_entry]
        self._row_offset = self._sentence_offsets()
        # An entry with several phrasings (its question and alternates) is ranked by the mean of
        # its two most similar phrasings: the best of a dozen phrasings matches by chance more
        # often than the best of one or two, and an entry that two of its phrasings match is
        # likelier the one meant. Its score (the confidence the policy thresholds read) stays its
        # best phrasing's, so thresholds keep their meaning. Measured on the dev sets
        # (bench/retrieval.py): banking intents recall@1 0.835 -> 0.846 with the learned embedder
        # (0.813 -> 0.821 base); entries with one phrasing rank as before.
        averaged = np.flatnonzero(self._phrasing_count >= 2)
        self._averaged_entries = averaged
        self._averaged_rows = np.concatenate(
            [np.arange(self._row_start[e], self._row_start[e] + self._phrasing_count[e])
             for e in averaged]
        ).astype(np.int64) if len(averaged) else np.zeros(0, dtype=np.int64)  # fmt: skip
        sizes = self._phrasing_count[averaged]
        self._averaged_starts = np.cumsum(sizes) - sizes
        self._faiss = self._build_faiss(vectors)
        self._bm25 = bm25s.BM25()
        # Each entry's words: its phrasings', then its answer's (tokenised apart, the same
        # tokens as the joined text; the answer's alone also say what a reply repeated).
        answers = _tokenize([e.answer for e in self.entries])
        phrasings = _tokenize([" ".join(e.phrasings) for e in self.entries])
        corpus = [asked + answer for asked, answer in zip(phrasings, answers, strict=True)]
        self._bm25.index(corpus, show_progress=False)
        # Words that single out a few entries (a name, a product code) carry a
        # conversation's subject from turn to turn; common words carry none.
        self._entry_counts = Counter(token for tokens in corpus for token in set(tokens))
        self._subject_max_entries = max(1, int(SUBJECT_WORD_MAX_SHARE * len(self.entries)))
        self._answer_words = _word_matrix(answers)

    # -- building -------------------------------------------------------------------

    @classmethod
    def build(
        cls,
        entries: Sequence[FaqEntry],
        embedder: Embedder,
        previous: FaqIndex | None = None,
        progress: Callable[[int, int], None] | None = None,
        sources: Sequence[str] = (),
    ) -> FaqIndex:
        """Embed every phrasing, reusing vectors of `previous` for texts it already has.

        `progress(done, total)` reports the texts that needed embedding.
        """
        keys: list[str] = []
        owners: list[int] = []
        texts: list[str] = []
        for number, entry in enumerate(entries):
            for text in entry.search_texts:
                keys.append(_text_key(embedder.name, text))
                owners.append(number)
                texts.append(text)
        known: dict[str, Vectors] = {}
        if previous is not None and previous.model == embedder.name:
            known = dict(zip(previous.phrasing_keys, previous.vectors, strict=True))
        missing = [i for i, key in enumerate(keys) if key not in known]
        done = 0

        def step(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, len(missing))

        if progress is not None:
            progress(0, len(missing))
        fresh = embedder.encode([texts[i] for i in missing], progress=step)
        vectors = np.zeros((len(keys), embedder.dimension), dtype=np.float32)
        fresh_rows = dict(zip(missing, fresh, strict=True))
        for i, key in enumerate(keys):
            vectors[i] = fresh_rows[i] if i in fresh_rows else known[key]
        thresholds = previous.thresholds if previous is not None else None
        if thresholds is not None and thresholds.examples is not None:
            # Neighbours must be read in the space the questions are searched in.
            thresholds = replace(thresholds, examples=thresholds.examples.embedded_by(embedder))
        return cls(
            entries,
            np.asarray(owners, dtype=np.int64),
            keys,
            vectors,
            embedder.name,
            thresholds=thresholds,
            keyword_weight=previous.keyword_weight if previous else DEFAULT_KEYWORD_WEIGHT,
            sources=sources,
        )

    @staticmethod
    def _build_faiss(vectors: Vectors) -> faiss.Index:
        dimension = vectors.shape[1] if vectors.ndim == 2 and vectors.shape[0] else 1
        index: faiss.Index
        if len(vectors) > HNSW_ABOVE:
            index = faiss.IndexHNSWFlat(dimension, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efSearch = 128
        else:
            index = faiss.IndexFlatIP(dimension)
        if len(vectors):
            index.add(np.ascontiguousarray(vectors))
        return index

    @property
    def content_hash(self) -> str:
        return self._content_hash

    def with_thresholds(self, thresholds: Thresholds) -> FaqIndex:
        clone = object.__new__(FaqIndex)
        for name in vars(self):
            setattr(clone, name, getattr(self, name))
        clone.thresholds = thresholds
        return clone

    def entry(self, entry_id: str) -> FaqEntry | None:
        row = self._row_of.get(entry_id)
        return None if row is None else self.entries[row]

    def __len__(self) -> int:
        return len(self.entries)

    # -- search ---------------------------------------------------------------------

    def search(
        self,
        query: str,
        query_vector: Vectors,
        k: int = 5,
        mode: SearchMode = "hybrid",
        context: Sequence[ContextTurn] = (),
        said: Collection[str] = (),
    ) -> list[FaqHit]:
        """Top-k entries for a query, best first, each noting the question's neighbours
        among the labelled questions the thresholds keep (`FaqHit.neighbours`). In a
        conversation, what the latest reply said counts against an entry: the share of
        its answer's words the reply holds, or all of it for the ids in `said` (the
        entries the bot's own reply gave)."""
        if not self.entries or not query.strip():
            return []
        if context:
            with _BLAS.limit(limits=1, user_api="blas"):
                hits = self._search_in_context(query, query_vector, context, said, k, mode)
        else:
            hits = self._search_alone(query, query_vector, k, mode)
        examples = self.thresholds.examples
        if examples is None or examples.model != self.model or not hits:
            return hits
        with _BLAS.limit(limits=1, user_api="blas"):
            neighbours = examples.neighbours(query_vector)
        return [replace(hit, neighbours=neighbours) for hit in hits]

    def _search_alone(
        self, query: str, query_vector: Vectors, k: int, mode: SearchMode
    ) -> list[FaqHit]:
        """Hits for the question with no conversation before it."""
        k = min(k, len(self.entries))
        depth = min(len(self.vectors), max(64, 10 * k))
        _, rows = self._faiss.search(query_vector.reshape(1, -1).astype(np.float32), depth)
        # The nearest rows (and the best keyword matches) name the candidates; each is then
        # scored on all its rows.
        candidates = {int(self.phrasing_entry[row]) for row in rows[0] if row >= 0}
        keyword = np.zeros(len(self.entries), dtype=np.float32)
        tokens = _tokenize([query])[0]
        if tokens and mode != "dense":
            raw = np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)
            # Saturate rather than divide by the query's best match, so the keyword part
            # stays an absolute signal the policy thresholds can rely on.
            keyword = raw / (raw + BM25_SATURATION)
        if mode != "dense":
            candidates.update(int(i) for i in np.argsort(-keyword)[: 5 * k] if keyword[i] > 0)
        similarity = {owner: self._entry_similarity(owner, query_vector) for owner in candidates}

        weight = {"hybrid": self.keyword_weight, "dense": 0.0, "keyword": 1.0}[mode]
        ranked = sorted(
            candidates,
            key=lambda owner: (1 - weight) * similarity[owner][1] + weight * keyword[owner],
            reverse=True,
        )
        return [
            FaqHit(
                entry=self.entries[owner],
                score=(1 - weight) * similarity[owner][0] + weight * float(keyword[owner]),
                dense=similarity[owner][0],
                keyword=float(keyword[owner]),
            )
            for owner in ranked[:k]
        ]

    def _sentence_offsets(self) -> npt.NDArray[np.float32]:
        """What each embedded row adds to its similarity in a one-shot search: 0 for a
        phrasing, minus PASSAGE_SENTENCE_PENALTY * ln(sentences) for a passage's sentence."""
        offsets = np.zeros(len(self.phrasing_entry), dtype=np.float32)
        if PASSAGE_SENTENCE_PENALTY == 0:
            return offsets
        sentence_rows = ~self._is_phrasing
        sentences = self._sentence_count[self.phrasing_entry[sentence_rows]]
        offsets[sentence_rows] = -PASSAGE_SENTENCE_PENALTY * np.log(sentences)
        return offsets

    def _keyword_scores(self, text: str, subject_words: bool = False) -> npt.NDArray[np.float32]:
        """Raw BM25 score of every entry for `text` (only its rare words if `subject_words`)."""
        tokens = _tokenize([text])[0]
        if subject_words:
            limit = self._subject_max_entries
            tokens = [token for token in tokens if self._entry_counts.get(token, 0) <= limit]
        if not tokens:
            return np.zeros(len(self.entries), dtype=np.float32)
        return np.asarray(self._bm25.get_scores(tokens), dtype=np.float32)

    def _entry_similarity(self, owner: int, vector: Vectors) -> tuple[float, float]:
        """One entry's similarity to a question searched alone, (best, agreed): its best
        text's (a passage's sentences penalised), the score; and what ranks it, the mean of
        its two best phrasings (its one phrasing's), or its best sentence if higher."""
        start = int(self._row_start[owner])
        count = int(self._phrasing_count[owner])
        rows = slice(start, start + count + int(self._sentence_count[owner]))
        similarity = self.vectors[rows] @ vector.astype(np.float32) + self._row_offset[rows]
        agreed = float(np.sort(similarity[:count])[-2:].mean())
        if len(similarity) > count:
            agreed = max(agreed, float(similarity[count:].max()))
        return float(similarity.max()), agreed

    def _dense_scores(
        self, vector: Vectors
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Every entry's (best, agreed) similarity to `vector` as `_entry_similarity` reads
        it, with a passage's sentences counting fully (the conversation narrows them)."""
        best = np.full(len(self.entries), -1.0, dtype=np.float32)
        similarity = self.vectors @ vector.astype(np.float32)
        np.maximum.at(best, self.phrasing_entry, similarity)  # best of any text
        if not len(self._averaged_entries):
            return best, best
        # Entries with several phrasings: the mean of their two best phrasings (a tie for
        # the best counts twice), or their best sentence if that is higher.
        values = similarity[self._averaged_rows]
        starts = self._averaged_starts
        first = np.maximum.reduceat(values, starts)
        at_first = values == np.repeat(first, self._phrasing_count[self._averaged_entries])
        second = np.maximum.reduceat(np.where(at_first, -np.inf, values), starts)
        second = np.where(np.add.reduceat(at_first, starts) > 1, first, second)
        sentences = np.full(len(self.entries), -1.0, dtype=np.float32)
        rows = ~self._is_phrasing
        np.maximum.at(sentences, self.phrasing_entry[rows], similarity[rows])
        averaged = self._averaged_entries
        agreed = best.copy()
        agreed[averaged] = np.maximum((first + second) / 2, sentences[averaged])
        return best, agreed

    def _search_in_context(
        self,
        query: str,
        query_vector: Vectors,
        context: Sequence[ContextTurn],
        said: Collection[str],
        k: int,
        mode: SearchMode,
    ) -> list[FaqHit]:
        """Every entry scored by the question and by the recent turns (oldest first).

        The question's own fused score says whether an entry answers it; how well the
        entry matches the turns, each weighing CONTEXT_DECAY times the next, says whether
        it is about what the conversation is about; what the latest reply already said
        (ANSWERED_PENALTY) is not asked again. Rank by all three; the confidence stays the
        question's own score, nudged up by CONTEXT_CONFIDENCE for the best fit.
        """
        weight = {"hybrid": self.keyword_weight, "dense": 0.0, "keyword": 1.0}[mode]
        dense, agreed = self._dense_scores(query_vector)
        raw = self._keyword_scores(query) if mode != "dense" else np.zeros_like(dense)
        keyword = raw / (raw + BM25_SATURATION)
        own = (1 - weight) * dense + weight * keyword  # the confidence
        own_rank = (1 - weight) * agreed + weight * keyword  # what ranks (see _entry_similarity)
        ages = np.arange(len(context))[::-1]
        decay = CONTEXT_DECAY**ages
        fit = np.zeros_like(own)
        if mode != "keyword":
            shares = decay / decay.sum()
            for share, turn in zip(shares, context, strict=True):
                fit += CONTEXT_DENSE_WEIGHT * share * self._dense_scores(turn.vector)[1]
        if mode != "dense":
            turns = sum(
                (
                    factor * self._keyword_scores(turn.text, subject_words=not turn.customer)
                    for factor, turn in zip(decay, context, strict=True)
                ),
                np.zeros_like(own),
            )
            fit += CONTEXT_KEYWORD_WEIGHT * turns / (turns + BM25_SATURATION)
        best_fit = float(fit.max())
        relative = fit / best_fit if best_fit > 0 else np.zeros_like(fit)
        replies = [turn for turn in context if not turn.customer]
        already = self._answer_words.held_by(replies[-1].text) if replies else np.zeros_like(fit)
        for entry_id in said:
            if (row := self._row_of.get(entry_id)) is not None:
                already[row] = 1.0
        rank = own_rank + fit - ANSWERED_PENALTY * already
        order = np.argsort(-rank, kind="stable")[: min(k, len(self.entries))]
        return [
            FaqHit(
                entry=self.entries[row],
                score=float(own[row] + CONTEXT_CONFIDENCE * relative[row]),
                dense=float(dense[row]),
                keyword=float(keyword[row]),
                context=float(relative[row]),
            )
            for row in order
        ]

    # -- persistence ----------------------------------------------------------------

    def save(self, directory: Path) -> None:
        """Write the index atomically: readers see the old or the new one, never half."""
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".index-", dir=directory.parent))
        meta = {
            "format": FORMAT_VERSION,
            "model": self.model,
            "content_hash": self.content_hash,
            "thresholds": self.thresholds.to_json(),
            "keyword_weight": self.keyword_weight,
            "sources": self.sources,
            "entries": [entry.to_json() for entry in self.entries],
            "phrasing_entry": self.phrasing_entry.tolist(),
            "phrasing_keys": self.phrasing_keys,
        }
        (staging / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
        np.save(staging / "vectors.npy", self.vectors)
        if self.thresholds.examples is not None:
            np.save(staging / EXAMPLES_FILE, self.thresholds.examples.vectors)
        faiss.write_index(self._faiss, str(staging / "faiss.index"))
        old = directory.with_name(directory.name + ".old")
        if directory.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(staging, directory)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path) -> FaqIndex:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "meta.json").read_text())
            vectors = np.load(directory / "vectors.npy")
        except FileNotFoundError as exc:
            raise IndexLoadError(
                f"no FAQ index in {directory}; run `deskmate faq import FILE...`"
            ) from exc
        except (OSError, ValueError) as exc:
            raise IndexLoadError(
                f"FAQ index in {directory} is unreadable ({exc}); rebuild it with "
                "`deskmate faq import FILE...`"
            ) from exc
        if meta.get("format") != FORMAT_VERSION:
            raise IndexLoadError(
                f"FAQ index in {directory} has format {meta.get('format')}, expected "
                f"{FORMAT_VERSION}; rebuild it with `deskmate faq import FILE...`"
            )
        try:
            entries = [
                FaqEntry(
                    id=e["id"],
                    question=e["question"],
                    answer=e["answer"],
                    alternates=tuple(e.get("alternates", ())),
                    url=e.get("url"),
                    document=e.get("document"),
                )
                for e in meta["entries"]
            ]
            phrasing_entry = np.asarray(meta["phrasing_entry"], dtype=np.int64)
            phrasing_keys = list(meta["phrasing_keys"])
            examples_path = directory / EXAMPLES_FILE
            example_vectors = np.load(examples_path) if examples_path.exists() else None
            thresholds = Thresholds.from_json(meta["thresholds"], example_vectors)
            keyword_weight = float(meta["keyword_weight"])
            model = str(meta["model"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexLoadError(
                f"FAQ index in {directory} has malformed metadata ({exc!r}); rebuild it with "
                "`deskmate faq import FILE...`"
            ) from exc
        if not (len(vectors) == len(phrasing_keys) == len(phrasing_entry)):
            # meta.json and vectors.npy from two different saves (read during a save).
            raise IndexLoadError(f"FAQ index in {directory} changed while it was read; try again")
        return cls(
            entries,
            phrasing_entry,
            phrasing_keys,
            vectors.astype(np.float32),
            model,
            thresholds=thresholds,
            keyword_weight=keyword_weight,
            sources=meta.get("sources", []),
            saved_hash=meta.get("content_hash")
            if isinstance(meta.get("content_hash"), str)
            else None,
        )


def rebuild(
    directory: Path,
    entries: Sequence[FaqEntry],
    embedder: Embedder,
    progress: Callable[[int, int], None] | None = None,
    sources: Sequence[str] = (),
) -> tuple[FaqIndex, bool]:
    """Load the index in `directory`, rebuild it if the entries changed, save it.

    Returns the index and whether it was rebuilt. Unchanged texts keep their vectors.
    """
    previous: FaqIndex | None = None
    try:
        previous = FaqIndex.load(directory)
    except IndexLoadError:
        previous = None
    if previous is not None and content_hash(entries, embedder.name) == previous.content_hash:
        return previous, False
    index = FaqIndex.build(entries, embedder, previous=previous, progress=progress, sources=sources)
    index.save(directory)
    return index, True
