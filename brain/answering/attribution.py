"""Which passages an answer draws on: the one owner of that judgement.

Training labels every learned answer with the passages it draws on (so the model learns
to cite them), and serving applies the same judgement to what the model wrote, so that
the sources shown name every entry an answer used, not only the ones the model marked.

An answer draws on a passage when it repeats it closely (token-F1 at least
`COPY_MIN_F1`), or else when it carries its meaning: MiniLM cosine similarity with the
passage's text or its best sentence at least `MIN_SIMILARITY` (a reply that summarises two
reviews draws on both). Against the entries people drew on in grounded dev transcripts:
at 0.5, 84 % of them are found, and 47 % of the found ones are theirs (most of the rest
are near-identical reviews).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from brain.evaluation.metrics import token_f1
from retrieval.embedder import Embedder
from retrieval.faq import sentences
from retrieval.index import FaqHit

COPY_MIN_F1 = 0.5
MIN_SIMILARITY = 0.5
# Training only: an answer that meets no passage at MIN_SIMILARITY still cites the most
# similar one when it is at least this similar (the reply to learn is a person's, and a
# person answered from these entries).
FLOOR_SIMILARITY = 0.3


def drawn_on(
    embedder: Embedder,
    answer: str,
    hits: Sequence[FaqHit],
    floor: float | None = None,
) -> list[int]:
    """Numbers (1-based) of the passages `answer` draws on, most similar first.

    `floor`: when no passage reaches MIN_SIMILARITY, the most similar one still counts
    if at least this similar (None: it does not).
    """
    if not hits:
        return []
    overlaps = [token_f1(answer, hit.entry.answer) for hit in hits]
    copied = sorted(
        (i for i, f1 in enumerate(overlaps) if f1 >= COPY_MIN_F1), key=lambda i: -overlaps[i]
    )
    if copied:
        return [i + 1 for i in copied]
    # Each passage's text, whole and sentence by sentence (what a reply draws on), embedded
    # in one batch with the answer.
    texts = [[hit.entry.answer, *sentences(hit.entry.answer)] for hit in hits]
    vectors = embedder.encode([answer, *(text for group in texts for text in group)])
    similarity = vectors[1:] @ vectors[0]
    ends = np.cumsum([len(group) for group in texts])
    scores = [float(part.max()) for part in np.split(similarity, ends[:-1])]
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    similar = [i for i in order if scores[i] >= MIN_SIMILARITY]
    if not similar and floor is not None and scores[order[0]] >= floor:
        similar = order[:1]
    return [i + 1 for i in similar]
