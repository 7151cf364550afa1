"""Transcripts, datasets, LoRA fine-tuning, evaluation and the model registry."""
