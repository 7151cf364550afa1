"""The fine-tuning step itself: batches, the answer-only loss, and the HF Trainer around it.

Batches are left-padded so every answer ends at the last position; the model then computes
logits only for the last positions that hold answer tokens (`logits_to_keep`), which skips
most of the vocabulary projection — a large share of a small model's compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import Trainer

from training.dataset import IGNORE


class AnswerBatches:
    """Collates encoded examples: left padding, attention mask, explicit positions."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: Sequence[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        input_ids, labels, mask, positions = [], [], [], []
        for feature in features:
            pad = length - len(feature["input_ids"])
            input_ids.append([self.pad_token_id] * pad + feature["input_ids"])
            labels.append([IGNORE] * pad + feature["labels"])
            mask.append([0] * pad + [1] * len(feature["input_ids"]))
            positions.append([0] * pad + list(range(len(feature["input_ids"]))))
        return {
            "input_ids": torch.tensor(input_ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
            "position_ids": torch.tensor(positions),
        }


def answer_loss(
    model: Any, inputs: dict[str, torch.Tensor], num_items: torch.Tensor | int | None = None
) -> tuple[torch.Tensor, Any]:
    """Cross-entropy on answer tokens only; summed / `num_items` (else averaged)."""
    labels = inputs["labels"]
    length = labels.shape[1]
    has_label = labels != IGNORE
    first = int(torch.where(has_label.any(dim=0))[0].min()) if has_label.any() else length - 1
    keep = length - first + 1  # logits at position t predict token t + 1
    outputs = model(
        input_ids=inputs["input_ids"],
        attention_mask=inputs["attention_mask"],
        position_ids=inputs["position_ids"],
        logits_to_keep=keep,
    )
    logits = outputs.logits[:, :-1, :].float()
    targets = labels[:, length - keep + 1 :]
    total = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE,
        reduction="sum",
    )
    count = num_items if num_items is not None else has_label.sum().clamp(min=1)
    return total / count, outputs


class AnswerTrainer(Trainer):
    """The HF Trainer with the answer-only loss (progress bar, checkpoints, multi-GPU)."""

    loss_is_scaled_for_ga = True  # normalised over the whole accumulated batch

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        loss, outputs = answer_loss(model, inputs, num_items_in_batch)
        if num_items_in_batch is None:
            # Per-batch mean: let the Trainer divide by the accumulation steps.
            loss = loss / max(self.args.gradient_accumulation_steps, 1) if model.training else loss
        elif self.args.average_tokens_across_devices:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss
