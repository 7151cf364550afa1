"""Insights: what the bot did, folded from the transcripts stream into Redis."""
