"""`deskmate classifier`: reading labelled data, scores, calibration, training and
registering with the real MiniLM, evaluation as the CLI prints it, staff examples."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from bots.cli import main
from brain.answering.registry import ModelRegistry
from brain.mood.classifier import TOP_LAYER_KIND, VECTOR_KIND, MoodClassifier, unpadded
from retrieval.embedder import Embedder
from training.classifier import (
    ClassifierConfig,
    ClassifierDataError,
    calibrate,
    examples_from_conversations,
    read_labelled,
    scores,
    train,
)
from training.transcripts import Conversation, Message

ANGRY = [
    "I am furious, my order is late again",
    "this is outrageous, nobody answers my emails",
    "absolutely livid about being charged twice",
    "so angry, the parcel arrived smashed",
    "I hate waiting on hold for an hour",
    "you people are useless and rude",
]
HAPPY = [
    "thank you so much, the boots are lovely",
    "great news, it arrived early!",
    "so happy with my new jacket",
    "wonderful service, I love it",
    "brilliant, the refund came through",
    "delighted with the quick reply",
]
NEUTRAL = [
    '{"id": "a", "question": "How do I track my parcel?", "answer": "x", "alternates": '
    '["where is my order"]}',
    '{"query": "can I change my delivery address", "relevant": []}',
    '{"query": "which payment methods do you accept", "relevant": []}',
    '{"query": "how long does shipping take", "relevant": []}',
    '{"query": "do you ship abroad", "relevant": []}',
]


def write_labelled(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in rows))
    return path


@pytest.fixture
def env(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DESKMATE_DATA_DIR", str(data_dir))
    for name in list(os.environ):
        if name.startswith("DESKMATE_") and name != "DESKMATE_DATA_DIR":
            monkeypatch.delenv(name)
    return data_dir


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"data.jsonl: no labelled lines"),
        ('{"text": "ok", "label": "joy"}\n{"text": "ok"\n', r"data.jsonl:2: not valid JSON"),
        ('\n{"text": "", "label": "joy"}\n', r"data.jsonl:2: \"text\" must be a non-empty"),
        ('{"text": "hi", "label": 3}\n', r"data.jsonl:1: \"label\" must be a non-empty"),
        ("[1, 2]\n", r"data.jsonl:1: expected an object"),
    ],
)
def test_bad_labelled_files_name_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text(content)
    with pytest.raises(ClassifierDataError, match=message):
        read_labelled([path])


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ClassifierDataError, match=r"nope.jsonl: no such file"):
        read_labelled([tmp_path / "nope.jsonl"])


def test_scores_follow_the_eval_contract() -> None:
    result = scores(["anger", "anger", "joy", "joy"], ["anger", "joy", "joy", ""])
    assert set(result) == {"n", "macro_f1", "per_label"}
    assert result["n"] == 4
    assert set(result["per_label"]) == {"anger", "joy"}  # labels as in the data
    assert result["per_label"]["anger"] == {"precision": 1.0, "recall": 0.5, "f1": 0.6667}
    assert result["per_label"]["joy"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert result["macro_f1"] == pytest.approx((0.6667 + 0.5) / 2, abs=1e-4)


def test_calibration_picks_a_precise_strong_and_a_best_f1_sustained_threshold() -> None:
    anger = [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1]
    truth = [True, True, True, False, True, True, False, False, False, False]
    thresholds = calibrate(anger, truth, strong_precision=0.9)
    assert thresholds.strong == 0.85  # 3 of 3 above it are angry; at 0.8 only 3 of 4
    assert thresholds.sustained == 0.6  # 5 of 6 flagged, all 5 angry found: best F1


@pytest.mark.slow
@pytest.mark.parametrize("top_layer", [True, False], ids=["top_layer", "vector"])
def test_train_registers_a_version_with_report_and_plot(
    tmp_path: Path, embedder: Embedder, top_layer: bool
) -> None:
    data = write_labelled(
        tmp_path / "train.jsonl", [(t, "anger") for t in ANGRY] + [(t, "joy") for t in HAPPY]
    )
    dev = write_labelled(
        tmp_path / "dev.jsonl",
        [("I'm so mad about this delay", "anger"), ("thanks, you made my day", "joy")],
    )
    neutral = tmp_path / "faq.jsonl"
    neutral.write_text("\n".join(NEUTRAL) + "\n")
    registry = ModelRegistry(tmp_path / "classifiers")
    config = ClassifierConfig(
        [data], dev=dev, neutral=[neutral], show_progress=False, top_layer=top_layer, epochs=10
    )
    result = train(config, embedder, registry)
    assert result.version is not None and result.version.name == "v1"
    assert result.report["kind"] == (TOP_LAYER_KIND if top_layer else VECTOR_KIND)
    assert result.report["evaluation"]["per_label"]["anger"]["f1"] == 1.0
    folder = result.version.adapter_dir
    assert folder is not None
    assert (folder / "confusion.png").stat().st_size > 0
    report = json.loads((folder / "report.json").read_text())
    assert report["confusion"]["matrix"] == [[1, 0], [0, 1]]
    loaded = MoodClassifier.load(folder, "v1")
    assert loaded.labels == ("anger", "joy") and loaded.gate_weights is not None
    assert loaded.kind == result.report["kind"]
    encoding = embedder.encode_with_states(["how long does delivery take?", ANGRY[0]])
    question, angry = unpadded(encoding.states, encoding.masks) if top_layer else (None, None)
    calm_mood = loaded.read(encoding.vectors[0], question)
    assert calm_mood.anger < loaded.read(encoding.vectors[1], angry).anger
    assert result.version.metrics["anger_f1"] == 1.0


def test_training_the_top_layer_on_a_handful_of_texts_takes_seconds(
    tmp_path: Path, embedder: Embedder
) -> None:
    data = write_labelled(
        tmp_path / "train.jsonl", [(t, "anger") for t in ANGRY] + [(t, "joy") for t in HAPPY]
    )
    config = ClassifierConfig([data], register=False, show_progress=False, top_layer=True)
    embedder.encode(["warm up"])
    started = time.perf_counter()
    result = train(config, embedder, ModelRegistry(tmp_path / "r"))
    assert time.perf_counter() - started < 20
    classifier = result.classifier
    assert classifier.kind == TOP_LAYER_KIND and classifier.top_layer is not None
    base_config, base_weights = embedder.last_layer()
    assert dict(classifier.top_layer.config) == base_config
    changed = [
        name
        for name, weights in classifier.top_layer.weights.items()
        if not np.array_equal(weights, base_weights[name])
    ]
    assert changed  # the layer was trained, not just copied
    classifier.save(tmp_path / "bundle")
    # One MiniLM layer: 1.8 M weights, float16.
    assert (tmp_path / "bundle" / "top_layer.npz").stat().st_size < 4_000_000


def test_train_refuses_dev_labels_it_never_saw(tmp_path: Path, embedder: Embedder) -> None:
    data = write_labelled(tmp_path / "t.jsonl", [("grr", "anger"), ("yay", "joy")])
    dev = write_labelled(tmp_path / "d.jsonl", [("meh", "anger"), ("hmm", "boredom")])
    config = ClassifierConfig([data], dev=dev, register=False, show_progress=False)
    with pytest.raises(ClassifierDataError, match=r"d.jsonl:2: label 'boredom' is not in"):
        train(config, embedder, ModelRegistry(tmp_path / "r"))


def test_eval_json_measures_the_word_list_fallback(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_labelled(
        tmp_path / "dev.jsonl",
        [("this is a scam", "anger"), ("lovely day", "joy"), ("I am a bit cross", "anger")],
    )
    assert main(["classifier", "eval", str(data), "--json", "--version", "regex"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {
        "n": 3,
        "macro_f1": 0.3333,
        "per_label": {
            "anger": {"precision": 1.0, "recall": 0.5, "f1": 0.6667},
            "joy": {"precision": 0.0, "recall": 0.0, "f1": 0.0},
        },
    }


@pytest.mark.slow
def test_eval_of_the_bundled_classifier_writes_a_report(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_labelled(
        tmp_path / "dev.jsonl",
        [(ANGRY[0], "anger"), (HAPPY[0], "joy"), ("I'm so sad my dog died", "sadness")],
    )
    report = tmp_path / "report"
    assert (
        main(["classifier", "eval", str(data), "--version", "base", "--report", str(report)]) == 0
    )
    out = capsys.readouterr().out
    assert "macro-F1" in out and "anger" in out
    assert (report / "confusion.png").exists()
    assert json.loads((report / "report.json").read_text())["n"] == 3
    unknown = write_labelled(tmp_path / "odd.jsonl", [("hmm", "boredom")])
    assert main(["classifier", "eval", str(unknown), "--version", "base"]) == 2
    assert "odd.jsonl:1: unknown label 'boredom'" in capsys.readouterr().err


def test_cli_errors_name_the_file(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["classifier", "eval", str(tmp_path / "missing.jsonl"), "--version", "regex"]) == 2
    assert "missing.jsonl: no such file" in capsys.readouterr().err


def test_staff_examples_come_from_anger_handoffs_redacted() -> None:
    def conversation(reason: str, *texts: str) -> Conversation:
        messages = [Message("user", text, time=float(n)) for n, text in enumerate(texts)]
        messages.append(Message("assistant", "I'm passing you to our team", time=9.0))
        messages.append(Message("user", "after the handoff", time=20.0))
        return Conversation(messages, {"handoffs": [{"time": 10.0, "reason": reason}]})

    lines = examples_from_conversations(
        [
            conversation("angry customer: anger 0.91 (strong: at least 0.78)", "hi", "mad!"),
            conversation(
                "angry customer: anger 0.50 then 0.60 (sustained: two messages at least 0.48)",
                "/start",
                "late again, write to bob@example.com",
                "still nothing",
            ),
            conversation("not covered by the FAQ", "banana bread?"),
        ],
        "anger",
    )
    assert lines == [
        {"text": "mad!", "label": "anger"},
        {"text": "late again, write to <EMAIL>", "label": "anger"},
        {"text": "still nothing", "label": "anger"},
    ]


def test_examples_command_writes_jsonl(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "t.jsonl"
    conversation = Conversation(
        [Message("user", "worst service ever", time=1.0)],
        {"handoffs": [{"time": 2.0, "reason": "angry customer: anger 0.95 (strong)"}]},
    )
    exported.write_text(json.dumps(conversation.to_json()) + "\n")
    out = tmp_path / "examples.jsonl"
    assert (
        main(["classifier", "examples", str(exported), "--out", str(out), "--label", "anger"]) == 0
    )
    assert json.loads(out.read_text()) == {"text": "worst service ever", "label": "anger"}
    assert "(1 'anger' from anger handoffs, 0 labelled by staff)" in capsys.readouterr().out


def test_numpy_is_enough_to_serve(tmp_path: Path) -> None:
    # The served head is plain arrays: no scikit-learn object is pickled into it.
    from tests.brain.mood.test_classifier import two_label_head

    two_label_head().save(tmp_path / "h")
    with np.load(tmp_path / "h" / "head.npz", allow_pickle=False) as arrays:
        assert set(arrays.files) == {"weights", "bias"}
