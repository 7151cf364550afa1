"""Handing conversations to people: the lifecycle state machine and business hours."""
