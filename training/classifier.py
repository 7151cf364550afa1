"""`deskmate classifier`: train, evaluate and retrain the mood classifier.

labelled JSONL (`{"text", "label"}`) -> MiniLM sentence vectors (the embedder retrieval
uses, so serving reuses the question's vector) -> logistic regression head -> anger
thresholds calibrated on a dev set -> report (per-label precision/recall/F1, confusion
matrix plot) -> a registered (inactive) version in `<data_dir>/classifiers/`.

Two kinds (see brain/mood/classifier.py). `top_layer` (the default): the token states
entering MiniLM's last layer, from the same pass as the sentence vectors, train a copy of
that layer + a linear head (bench/mood_top_layer.py's recipe); serving runs that one layer
again on the question's states, not a second encoder pass. `vector` (`--no-top-layer`):
a logistic regression head over the sentence vectors. Both keep the neutral gate over the
sentence vectors. The README ("Mood") has the measured comparison.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from brain.answering.registry import ModelRegistry, ModelVersion
from brain.mood.classifier import (
    NEGATIVE_LABELS,
    POSITIVE_LABELS,
    MoodClassifier,
    MoodThresholds,
    TopLayer,
    Vectors,
    default_anger_label,
    unpadded,
)
from brain.mood.reader import REGEX, regex_mood
from brain.policy import is_anger_reason
from retrieval.embedder import Embedder
from training.redact import Redactor
from training.transcripts import Conversation

log = logging.getLogger(__name__)

NO_LABEL = ""  # what the word-list fallback predicts for a message it finds not angry


class ClassifierDataError(ValueError):
    """A labelled file cannot be used; the message says file:line."""


@dataclass(frozen=True, slots=True)
class Labelled:
    text: str
    label: str
    where: str  # "file:line", for error messages


def _json_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """("file:line", parsed value) for each non-blank line; unreadable files and invalid
    JSON raise ClassifierDataError naming them."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ClassifierDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ClassifierDataError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ClassifierDataError(f"{where}: not valid JSON ({exc.msg})") from None
        yield where, data


def read_labelled(paths: Iterable[Path]) -> list[Labelled]:
    """Every `{"text", "label"}` line of the files, validated (errors name file:line)."""
    examples: list[Labelled] = []
    for path in paths:
        found = 0
        for where, data in _json_lines(path):
            if not isinstance(data, dict):
                raise ClassifierDataError(f'{where}: expected an object {{"text", "label"}}')
            text, label = data.get("text"), data.get("label")
            if not isinstance(text, str) or not text.strip():
                raise ClassifierDataError(f'{where}: "text" must be a non-empty string')
            if not isinstance(label, str) or not label.strip():
                raise ClassifierDataError(f'{where}: "label" must be a non-empty string')
            examples.append(Labelled(text, label.strip(), where))
            found += 1
        if not found:
            raise ClassifierDataError(f"{path}: no labelled lines")
    return examples


NEUTRAL_FIELDS = ("text", "query", "question")


def read_neutral(paths: Iterable[Path]) -> list[str]:
    """Neutral customer texts from JSONL: each line's "text", "query" or "question" (FAQ
    files and labelled query files both work) and its "alternates". Errors name file:line."""
    texts: list[str] = []
    for path in paths:
        found = 0
        for where, data in _json_lines(path):
            text = next(
                (data[f] for f in NEUTRAL_FIELDS if isinstance(data, dict) and f in data), None
            )
            if not isinstance(text, str):
                raise ClassifierDataError(f'{where}: needs a "text", "query" or "question" string')
            if not text.strip():
                continue  # an empty message (query files test those) is no example
            alternates = data.get("alternates") or []
            texts += [text, *(a for a in alternates if isinstance(a, str) and a.strip())]
            found += 1
        if not found:
            raise ClassifierDataError(f"{path}: no lines")
    return texts


@dataclass
class ClassifierConfig:
    """Options of `deskmate classifier train`."""

    data: list[Path]
    dev: Path | None = None  # calibrate and report on this set; else a held-out tenth
    neutral: list[Path] = field(default_factory=list)  # neutral questions: the gate
    regularization: float = 4.0  # logistic regression C (chosen on the emotion dev set)
    anger_label: str = ""  # default: the first generic anger name the labels use
    positive: tuple[str, ...] = ()  # labels counting +1 in sentiment (default: generic)
    negative: tuple[str, ...] = ()  # labels counting -1 in sentiment (default: generic)
    strong_precision: float = 0.9  # one message hands off at the anger threshold this precise
    bundle: Path | None = None  # also write the classifier here (the package default)
    register: bool = True
    seed: int = 0
    show_progress: bool = True
    # Fine-tune the encoder's last layer + a head on the token states entering it (the
    # top_layer kind): dev anger F1 0.836 vs 0.810 for the vector head (README, "Mood").
    top_layer: bool = True
    epochs: int = 3  # over the training texts, for the top layer
    layer_lr: float = 3e-4  # the top layer's learning rate (the head's is head_lr)
    head_lr: float = 2e-3


@dataclass
class TrainResult:
    classifier: MoodClassifier
    report: dict[str, Any]
    version: ModelVersion | None
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def embed(embedder: Embedder, texts: Sequence[str], show_progress: bool, what: str) -> Vectors:
    """Sentence vectors of `texts`, with a progress bar on stderr."""
    from tqdm import tqdm

    with tqdm(total=len(texts), desc=what, unit="text", disable=not show_progress) as bar:
        return embedder.encode(texts, progress=bar.update)


def embed_with_states(
    embedder: Embedder, texts: Sequence[str], show_progress: bool, what: str
) -> tuple[Vectors, list[Vectors]]:
    """Sentence vectors of `texts` and, from the same pass, each text's unpadded token
    states entering the encoder's last layer."""
    from tqdm import tqdm

    vectors, states = [], []
    with tqdm(total=len(texts), desc=what, unit="text", disable=not show_progress) as bar:
        for start in range(0, len(texts), 64):
            encoding = embedder.encode_with_states(texts[start : start + 64])
            vectors.append(encoding.vectors)
            states += unpadded(encoding.states, encoding.masks)
            bar.update(len(encoding.vectors))
    if not vectors:
        return np.zeros((0, embedder.dimension), dtype=np.float32), []
    return np.concatenate(vectors), states


def fit_top_layer(
    base: TopLayer,
    states: Sequence[Vectors],
    labels: Sequence[str],
    config: ClassifierConfig,
) -> tuple[TopLayer, tuple[str, ...], Vectors, Vectors]:
    """(fine-tuned layer, labels, head weights, head bias): `base` (a copy of the
    encoder's last layer) and a linear head over its normalised mean-pooled output,
    trained with cross-entropy (AdamW, linear warm-up over a tenth then decay)."""
    import torch

    torch.manual_seed(config.seed)
    classes = tuple(sorted(set(labels)))
    layer = base.module()
    head = torch.nn.Linear(int(base.config["hidden_size"]), len(classes))
    tensors = [torch.from_numpy(np.asarray(s, dtype=np.float32)) for s in states]
    target = torch.tensor([classes.index(label) for label in labels])
    batch_size = 32
    steps = max(1, config.epochs * ((len(tensors) + batch_size - 1) // batch_size))
    optimizer = torch.optim.AdamW(
        [
            {"params": layer.parameters(), "lr": config.layer_lr},
            {"params": head.parameters(), "lr": config.head_lr},
        ],
        weight_decay=0.01,
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps)
    )
    generator = torch.Generator().manual_seed(config.seed)
    layer.train()
    for _ in range(config.epochs):
        order = torch.randperm(len(tensors), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            padded = torch.nn.utils.rnn.pad_sequence([tensors[r] for r in rows], batch_first=True)
            mask = torch.nn.utils.rnn.pad_sequence(
                [torch.ones(len(tensors[r]), dtype=torch.long) for r in rows], batch_first=True
            )
            logits = head(TopLayer.pooled(layer, padded, mask, base.scale))
            loss = torch.nn.functional.cross_entropy(logits, target[rows])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
    layer.eval()
    weights = {name: w.detach().numpy().copy() for name, w in layer.state_dict().items()}
    tuned = TopLayer(dict(base.config), weights, base.scale)
    return (
        tuned,
        classes,
        head.weight.detach().numpy().astype(np.float32),
        head.bias.detach().numpy().astype(np.float32),
    )


def fit_head(
    vectors: Vectors, labels: Sequence[str], regularization: float, seed: int = 0
) -> tuple[tuple[str, ...], Vectors, Vectors]:
    """(labels, weights, bias) of a multinomial logistic regression on the vectors."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=regularization, max_iter=3000, random_state=seed)
    model.fit(vectors, list(labels))
    classes = tuple(str(c) for c in model.classes_)
    weights, bias = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if len(classes) == 2:  # sklearn keeps one row for two classes: make it a softmax pair
        weights = np.stack([-weights[0] / 2, weights[0] / 2])
        bias = np.array([-bias[0] / 2, bias[0] / 2], dtype=np.float32)
    return classes, weights, bias


def fit_gate(
    emotional: Vectors, neutral: Vectors, regularization: float, seed: int = 0
) -> tuple[Vectors, float]:
    """(weights, bias) of a logistic regression: emotional texts (1) vs neutral ones (0),
    the two classes weighted equally whatever their sizes."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(
        C=regularization, max_iter=3000, class_weight="balanced", random_state=seed
    )
    model.fit(np.concatenate([emotional, neutral]), [1] * len(emotional) + [0] * len(neutral))
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def calibrate(
    anger: Sequence[float], is_anger: Sequence[bool], strong_precision: float
) -> MoodThresholds:
    """Anger thresholds from dev probabilities: `strong` is the lowest threshold whose
    messages at or above it are angry at least `strong_precision` of the time (one
    message alone hands off, so it is chosen for precision); `sustained` maximises F1 per
    message (two in a row must both reach it, which is itself rarer by chance)."""
    scores = np.asarray(anger, dtype=np.float64)
    truth = np.asarray(is_anger, dtype=bool)
    positives = max(int(truth.sum()), 1)
    strong, sustained, best_f1 = 0.99, 0.5, -1.0
    for threshold in sorted({round(float(s), 4) for s in scores}, reverse=True):
        flagged = scores >= threshold
        hits = int((flagged & truth).sum())
        precision = hits / max(int(flagged.sum()), 1)
        recall = hits / positives
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        if precision >= strong_precision and hits >= 3:
            strong = threshold
        if f1 > best_f1:
            best_f1, sustained = f1, threshold
    sustained = min(sustained, strong)
    return MoodThresholds(round(strong, 4), round(sustained, 4))


def scores(gold: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    """`{"n", "macro_f1", "per_label": {label: {"precision", "recall", "f1"}}}` over the
    labels the data uses (a prediction outside them only costs precision elsewhere)."""
    labels = sorted(set(gold))
    per_label = {}
    for label in labels:
        hits = sum(g == label and p == label for g, p in zip(gold, predicted, strict=True))
        predicted_n = sum(p == label for p in predicted)
        gold_n = sum(g == label for g in gold)
        precision = hits / predicted_n if predicted_n else 0.0
        recall = hits / gold_n if gold_n else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        per_label[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }
    macro = sum(v["f1"] for v in per_label.values()) / len(per_label) if per_label else 0.0
    return {"n": len(gold), "macro_f1": round(macro, 4), "per_label": per_label}


def confusion(
    gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """Counts [gold row][predicted column] over `labels` (+ NO_LABEL if predicted)."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for g, p in zip(gold, predicted, strict=True):
        if g in index and p in index:
            matrix[index[g]][index[p]] += 1
    return matrix


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path) -> Path:
    """confusion.png: gold labels down, predictions across, counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [label or "(none)" for label in labels]
    figure, axes = plt.subplots(figsize=(1.2 * len(names) + 2, 1.1 * len(names) + 1.5))
    axes.imshow(np.asarray(matrix), cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=30)
    axes.set_yticks(range(len(names)), names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("labelled")
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            axes.text(column, row, str(count), ha="center", va="center")
    axes.set_title("Mood classifier: confusion matrix")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_evaluation(
    directory: Path, result: Mapping[str, Any], gold: Sequence[str], predicted: Sequence[str]
) -> None:
    """report.json (the scores, the confusion matrix) and confusion.png in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    labels = sorted(set(gold))
    if any(p not in labels for p in predicted):
        labels.append(NO_LABEL)
    matrix = confusion(gold, predicted, labels)
    report = {**result, "confusion": {"labels": labels, "matrix": matrix}}
    (directory / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    plot_confusion(matrix, labels, directory / "confusion.png")


def split_dev(
    examples: Sequence[Labelled], fraction: float, seed: int
) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held out): `fraction` of each label held out, at least one where possible."""
    rng = random.Random(seed)
    train: list[Labelled] = []
    held: list[Labelled] = []
    by_label: dict[str, list[Labelled]] = {}
    for example in examples:
        by_label.setdefault(example.label, []).append(example)
    for group in by_label.values():
        rng.shuffle(group)
        cut = max(1, round(len(group) * fraction)) if len(group) > 1 else 0
        held += group[:cut]
        train += group[cut:]
    return train, held


def train(config: ClassifierConfig, embedder: Embedder, registry: ModelRegistry) -> TrainResult:
    """Fit, calibrate, report and register a classifier; see the module docstring."""
    started = time.perf_counter()
    examples = read_labelled(config.data)
    labels = sorted({e.label for e in examples})
    if len(labels) < 2:
        raise ClassifierDataError(f"{config.data[0]}: needs at least two labels, found {labels}")
    anger_label = config.anger_label or default_anger_label(labels)
    if anger_label not in labels:
        raise ClassifierDataError(
            f"no anger label among {labels}: name the one that escalates with --anger-label"
        )
    for option, named in (("--positive", config.positive), ("--negative", config.negative)):
        unknown = sorted(set(named) - set(labels))
        if unknown:
            raise ClassifierDataError(f"{option} names {unknown}, not labels of the data")
    if config.dev is not None:
        dev = read_labelled([config.dev])
        for example in dev:
            if example.label not in labels:
                raise ClassifierDataError(
                    f"{example.where}: label {example.label!r} is not in the training data "
                    f"({', '.join(labels)})"
                )
        fit_on, calibrated_from = examples, str(config.dev)
    else:
        fit_on, dev = split_dev(examples, 0.1, config.seed)
        calibrated_from = "a held-out tenth of the training data"

    neutral_texts = read_neutral(config.neutral)  # every file is checked before the work
    random.Random(config.seed).shuffle(neutral_texts)
    neutral_dev_n = len(neutral_texts) // 5  # held out to calibrate the anger thresholds
    states: list[Vectors] = []
    dev_states: list[Vectors] | None = None
    neutral_dev_states: list[Vectors] | None = None
    if config.top_layer:
        show = config.show_progress
        vectors, states = embed_with_states(embedder, [e.text for e in fit_on], show, "embedding")
        dev_vectors, dev_states = embed_with_states(
            embedder, [e.text for e in dev], show, "embedding dev"
        )
        held_vectors, neutral_dev_states = embed_with_states(
            embedder, neutral_texts[:neutral_dev_n], show, "embedding neutral (held out)"
        )
        rest = embed(embedder, neutral_texts[neutral_dev_n:], show, "embedding neutral")
        neutral_vectors = np.concatenate([held_vectors, rest])
    else:
        vectors = embed(embedder, [e.text for e in fit_on], config.show_progress, "embedding")
        dev_vectors = embed(embedder, [e.text for e in dev], config.show_progress, "embedding dev")
        neutral_vectors = embed(embedder, neutral_texts, config.show_progress, "embedding neutral")
    fitted_at = time.perf_counter()
    top_layer = None
    if config.top_layer:
        top_layer, classes, weights, bias = fit_top_layer(
            TopLayer(*embedder.last_layer()), states, [e.label for e in fit_on], config
        )
    else:
        classes, weights, bias = fit_head(
            vectors, [e.label for e in fit_on], config.regularization, config.seed
        )
    gate_weights, gate_bias = None, 0.0
    if neutral_texts:
        gate_weights, gate_bias = fit_gate(
            vectors, neutral_vectors[neutral_dev_n:], config.regularization, config.seed
        )
    fit_seconds = time.perf_counter() - fitted_at
    positive = frozenset(config.positive) or POSITIVE_LABELS & set(classes)
    negative = frozenset(config.negative) or NEGATIVE_LABELS & set(classes)
    classifier = MoodClassifier(
        labels=classes,
        weights=weights,
        bias=bias,
        embedder=embedder.name,
        anger_label=anger_label,
        positive=frozenset(positive),
        negative=frozenset(negative),
        thresholds=MoodThresholds(1.0, 1.0),
        gate_weights=gate_weights,
        gate_bias=gate_bias,
        top_layer=top_layer,
    )
    # Thresholds: dev texts plus the held-out neutral questions, so a threshold chosen for
    # precision also holds on the messages a support desk mostly gets.
    calibration = np.concatenate([dev_vectors, neutral_vectors[:neutral_dev_n]])
    is_anger = [e.label == anger_label for e in dev] + [False] * neutral_dev_n
    calibration_states = (
        None
        if dev_states is None or neutral_dev_states is None
        else dev_states + neutral_dev_states
    )
    thresholds = calibrate(
        classifier.anger(calibration, calibration_states).tolist(),
        is_anger,
        config.strong_precision,
    )
    if neutral_dev_n:
        calibrated_from += f" + {neutral_dev_n} held-out neutral texts"
    gold = [e.label for e in dev]
    predicted = classifier.predict(dev_vectors, dev_states)
    evaluation = scores(gold, predicted)
    neutral_anger = classifier.anger(neutral_vectors[:neutral_dev_n], neutral_dev_states)
    seconds = time.perf_counter() - started
    report: dict[str, Any] = {
        "data": [str(p) for p in config.data],
        "neutral": [str(p) for p in config.neutral],
        "examples": len(fit_on),
        "neutral_examples": len(neutral_texts) - neutral_dev_n,
        "label_counts": dict(Counter(e.label for e in fit_on)),
        "evaluated_on": str(config.dev) if config.dev else "a held-out tenth",
        "evaluation": evaluation,
        "thresholds": {**thresholds.to_json(), "calibrated_from": calibrated_from},
        "neutral_flagged_strong": round(
            float((neutral_anger >= thresholds.strong).mean()) if neutral_dev_n else 0.0, 4
        ),
        "kind": classifier.kind,
        "regularization": config.regularization,
        "train_seconds": round(seconds, 2),
        "fit_seconds": round(fit_seconds, 3),
    }
    classifier = replace(
        classifier,
        thresholds=MoodThresholds(thresholds.strong, thresholds.sustained, calibrated_from),
        info={"trained_on": report["data"], "neutral": report["neutral"], "evaluation": evaluation},
    )
    if config.bundle is not None:
        classifier.save(config.bundle)
    version = None
    if config.register:
        staging = Path(tempfile.mkdtemp(prefix="deskmate-classifier-"))
        try:
            classifier.save(staging)
            write_evaluation(staging, {**report}, gold, predicted)
            version = registry.register(
                staging,
                embedder.name,
                metrics={
                    "macro_f1": evaluation["macro_f1"],
                    "anger_f1": _f1(evaluation, anger_label),
                },
                info={"labels": list(classes), "examples": len(fit_on)},
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return TrainResult(classifier, report, version, seconds)


def _f1(evaluation: Mapping[str, Any], label: str) -> float:
    return float(evaluation["per_label"].get(label, {}).get("f1", 0.0))


Predictor = Callable[[Sequence[str]], list[str]]


def predictor(classifier: MoodClassifier | None, embedder: Embedder | None) -> Predictor:
    """Labels for texts: the classifier's best label, or with none the word list's (the
    anger label for an angry message, NO_LABEL otherwise)."""
    if classifier is None or embedder is None:
        anger_label = classifier.anger_label if classifier is not None else "anger"

        def regex(texts: Sequence[str]) -> list[str]:
            return [regex_mood(text, anger_label).label for text in texts]

        return regex
    fitted = classifier

    def classify(texts: Sequence[str]) -> list[str]:
        if fitted.needs_states:
            vectors, states = embed_with_states(embedder, texts, False, "")
            return fitted.predict(vectors, states)
        return fitted.predict(embedder.encode(texts))

    return classify


def evaluate(
    path: Path,
    classifier: MoodClassifier | None,
    embedder: Embedder | None,
    report_dir: Path | None = None,
) -> dict[str, Any]:
    """The eval contract on one labelled file; `report_dir` also gets report.json and
    confusion.png. A label the classifier does not know fails with file:line."""
    examples = read_labelled([path])
    if classifier is not None:
        for example in examples:
            if example.label not in classifier.labels:
                raise ClassifierDataError(
                    f"{example.where}: unknown label {example.label!r} (classifier "
                    f"{classifier.version} knows {', '.join(classifier.labels)})"
                )
    gold = [e.label for e in examples]
    predicted = predictor(classifier, embedder)([e.text for e in examples])
    result = scores(gold, predicted)
    if report_dir is not None:
        source = classifier.version if classifier is not None else REGEX
        write_evaluation(report_dir, {**result, "classifier": source}, gold, predicted)
    return result


def staff_labelled(conversations: Iterable[Conversation]) -> list[dict[str, str]]:
    """The customer messages staff labelled in the dashboard, as `{"text", "label"}` lines
    (label `neutral` for "no emotion"), personal data redacted."""
    redactor = Redactor()
    lines: list[dict[str, str]] = []
    for conversation in conversations:
        names = conversation.meta.get("names", [])
        for message in conversation.messages:
            if message.role == "user" and message.mood_label:
                text = redactor.redact(message.content, names).strip()
                if text:
                    lines.append({"text": text, "label": message.mood_label})
    return lines


def examples_from_conversations(
    conversations: Iterable[Conversation], anger_label: str
) -> list[dict[str, str]]:
    """Training lines from staff transcripts: the customer messages that led to a handoff
    for anger (the last one before it; the last two for sustained anger), personal data
    redacted. Each conversation's handoff reasons come from `meta.handoffs`."""
    redactor = Redactor()
    lines: list[dict[str, str]] = []
    for conversation in conversations:
        for handoff in conversation.meta.get("handoffs", []):
            reason = str(handoff.get("reason", ""))
            if not is_anger_reason(reason):
                continue
            when = float(handoff.get("time") or 0.0)
            before = [
                m
                for m in conversation.messages
                if m.role == "user" and not m.content.startswith("/") and m.time <= when
            ]
            take = 2 if "sustained" in reason else 1
            names = conversation.meta.get("names", [])
            for message in before[-take:]:
                text = redactor.redact(message.content, names).strip()
                if text:
                    lines.append({"text": text, "label": anger_label})
    return lines
