"""The training report: JSON, PNG plots of loss curves and metrics, and a terminal summary."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRICS = ("token_f1", "rouge_l", "citation_accuracy", "handoff_rate")


def loss_curves(log_history: Sequence[Mapping[str, Any]]) -> dict[str, list[list[float]]]:
    """[[step, loss], ...] for training and held-out loss from the Trainer's log."""
    train = [[float(e["step"]), float(e["loss"])] for e in log_history if "loss" in e]
    held = [[float(e["step"]), float(e["eval_loss"])] for e in log_history if "eval_loss" in e]
    return {"train": train, "heldout": held}


def write_plots(report: Mapping[str, Any], directory: Path) -> list[Path]:
    """loss.png (training and held-out loss by step) and metrics.png (base, serving and new)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    curves = report.get("loss", {})
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker=".", label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("loss (answer tokens)")
    axes.set_title("Fine-tuning loss")
    axes.legend()
    figure.tight_layout()
    paths.append(directory / "loss.png")
    figure.savefig(paths[-1], dpi=100)
    plt.close(figure)

    evaluation = report.get("evaluation", {})
    models = [name for name in ("base", "serving", "new") if name in evaluation]
    if models:
        figure, axes = plt.subplots(figsize=(7, 4))
        width = 0.8 / len(models)
        for offset, name in enumerate(models):
            values = [evaluation[name]["scores"][m] for m in METRICS]
            version = evaluation[name]["version"]
            label = name if version == name else f"{name} ({version})"
            axes.bar([i + offset * width for i in range(len(METRICS))], values, width, label=label)
        axes.set_xticks([i + width * (len(models) - 1) / 2 for i in range(len(METRICS))])
        axes.set_xticklabels(METRICS)
        axes.set_ylim(0, 1)
        axes.set_title(f"Held-out answers (n={evaluation[models[0]]['scores']['n']})")
        axes.legend()
        figure.tight_layout()
        paths.append(directory / "metrics.png")
        figure.savefig(paths[-1], dpi=100)
        plt.close(figure)
    return paths


def write_report(report: Mapping[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "report.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def summary(report: Mapping[str, Any]) -> str:
    """A terminal-readable summary of a training report."""
    data = report.get("data", {})
    training = report.get("training", {})
    lines = [
        f"Conversations: {data.get('conversations', 0)}   pairs kept: "
        + ", ".join(f"{k} {v}" for k, v in data.get("pairs", {}).get("kept", {}).items())
        + "   dropped: "
        + (
            ", ".join(f"{k} {v}" for k, v in data.get("pairs", {}).get("dropped", {}).items())
            or "none"
        ),
        f"Examples: {data.get('train_examples', 0)} train, {data.get('heldout_examples', 0)} "
        f"held out   {data.get('redaction_summary', '')}",
        f"Training: {training.get('seconds', 0):.0f} s, {training.get('tokens_per_second', 0):.0f} "
        f"tokens/s, final loss {training.get('final_loss', float('nan')):.3f}",
    ]
    evaluation = report.get("evaluation", {})
    if evaluation:
        header = f"  {'model':22}" + "".join(f"{m:>19}" for m in METRICS)
        lines += ["Held-out evaluation:", header]
        for name in ("base", "serving", "new"):
            if name in evaluation:
                scores = evaluation[name]["scores"]
                version = evaluation[name]["version"]
                label = name if version == name else f"{name} ({version})"
                lines.append(f"  {label:22}" + "".join(f"{scores[m]:>19.3f}" for m in METRICS))
    if report.get("version"):
        lines.append(
            f"Registered as {report['version']} (not active: `deskmate model promote "
            f"{report['version']}`)"
        )
    if report.get("files"):
        lines.append("Report: " + ", ".join(report["files"]))
    return "\n".join(lines)
