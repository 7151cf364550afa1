"""Retraining from transcripts: export/import, redaction, fine-tuning, evaluation."""
