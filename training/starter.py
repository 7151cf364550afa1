"""Bundle a training run's adapter as deskmate's starter adapter (`make starter-model`).

The hf backend serves the starter adapter on the default model unless told otherwise
(DESKMATE_MODEL_ADAPTER). It is a LoRA adapter like any registered version; bundling
stores its weights in float16 (half the size; they are cast back when merged) with the
run's figures in a model card, so that what ships says how it was made and how it did.

    python -m training.starter RUN_DIR [TARGET_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from brain.answering.model_loading import STARTER_ADAPTER

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def model_card(report: Mapping[str, Any]) -> str:
    """The starter's README: data, settings, training cost and held-out figures."""
    data = report.get("data", {})
    training = report.get("training", {})
    config = report.get("config", {})
    lines = [
        "# deskmate starter adapter",
        "",
        f"LoRA adapter for `{report.get('base_model', '?')}`, served by the hf backend unless "
        "DESKMATE_MODEL_ADAPTER names another adapter (or `none`). Reproduce it with "
        "`make starter-model`; the README's section on the default model says which public "
        "data it learns from, under which license, and how it compares with quoting.",
        "",
        f"- conversations: `{Path(str(config.get('conversations', '?'))).name}` "
        f"({data.get('conversations', 0)} conversations, {data.get('train_examples', 0)} "
        f"training examples, {data.get('heldout_examples', 0)} held out)",
        f"- grounded in an index of {data.get('faq_entries', 0)} entries",
        f"- epochs {config.get('epochs')}, LoRA r={config.get('lora_r')} "
        f"alpha={config.get('lora_alpha')}, max length {config.get('max_length')}, "
        f"{config.get('top_k', 3)} passages per prompt cut to {config.get('passage_chars')} "
        "characters",
        f"- training: {training.get('seconds', 0):.0f} s on {training.get('device', '?')}, "
        f"{training.get('tokens', 0)} tokens ({training.get('tokens_per_second', 0):.0f} "
        "tokens/s)",
    ]
    if training.get("resumed"):
        lines.append(
            f"- resumed from step {training.get('resumed_from_step', '?')} of an earlier run "
            "(its checkpoint); the time and tokens above are this run's"
        )
    lines.append("")
    evaluation = report.get("evaluation", {})
    if evaluation:
        lines += [
            "Held-out turns (token-F1 and ROUGE-L against the person's reply):",
            "",
            "| model | token-F1 | ROUGE-L | cites the right entry |",
            "|---|---|---|---|",
        ]
        for name, result in evaluation.items():
            scores = result.get("scores", {})
            lines.append(
                f"| {name} ({result.get('version', name)}) | {scores.get('token_f1', 0):.3f} | "
                f"{scores.get('rouge_l', 0):.3f} | {scores.get('citation_accuracy', 0):.3f} |"
            )
    return "\n".join(lines) + "\n"


def bundle(run_dir: Path, target: Path = STARTER_ADAPTER) -> Path:
    """Copy `run_dir`'s adapter (float16 weights) and a model card into `target`."""
    import torch
    from safetensors.torch import load_file, save_file

    adapter = run_dir / "adapter"
    if not (adapter / CONFIG).is_file() or not (adapter / WEIGHTS).is_file():
        raise FileNotFoundError(f"{adapter}: no adapter (run `deskmate train` first)")
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((adapter / CONFIG).read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = report.get("base_model", "")  # not the run's path
    (target / CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    weights = {
        name: tensor.to(torch.float16).contiguous()
        for name, tensor in load_file(str(adapter / WEIGHTS)).items()
    }
    save_file(weights, str(target / WEIGHTS), metadata={"format": "pt"})
    (target / "README.md").write_text(model_card(report), encoding="utf-8")
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.starter",
        description="Bundle a `deskmate train` run's adapter as the starter adapter.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="the run's --output-dir")
    parser.add_argument(
        "target",
        type=Path,
        nargs="?",
        default=STARTER_ADAPTER,
        metavar="TARGET_DIR",
        help=f"where the bundle goes (default: {STARTER_ADAPTER})",
    )
    args = parser.parse_args(argv)
    try:
        target = bundle(args.run_dir, args.target)
    except (OSError, ValueError) as exc:
        print(f"python -m training.starter: error: {exc}", file=sys.stderr)
        return 2
    print(f"Starter adapter written to {target}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
