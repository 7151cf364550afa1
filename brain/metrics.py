"""deskmate's Prometheus metrics: every counter, histogram and gauge the flow exports,
declared once here (the web server serves them at `/metrics`).

Counters and the latency histogram are counted by the process that does the work
(intake, brain worker, sender); the queue gauges and the model version are read from
Redis when `/metrics` is scraped (`bots.web`), so every process reports the shared
figures.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge, Histogram, Info

MESSAGES_IN = Counter(
    "deskmate_messages_in_total", "Inbound messages queued (repeats not counted)", ["channel"]
)
MESSAGES_OUT = Counter(
    "deskmate_messages_out_total", "Replies delivered to a platform", ["channel"]
)
REDELIVERIES = Counter(
    "deskmate_redeliveries_total",
    "Replies sent again because an earlier platform call for them was cut mid-flight (a "
    "process killed or paused past its lock): each may have reached the customer twice",
    ["channel"],
)
DECISIONS = Counter(
    "deskmate_decisions_total",
    "What the brain did with a message: answer, clarify, handoff or none",
    ["channel", "action"],
)
HANDOFFS = Counter("deskmate_handoffs_total", "Conversations handed to a person", ["channel"])
REPLY_LATENCY = Histogram(
    "deskmate_reply_latency_seconds",
    "Seconds from a message's arrival to its reply's delivery",
    ["channel"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300),
)
QUEUE_DEPTH = Gauge(
    "deskmate_queue_depth", "Entries of a queue not finished yet (waiting + pending)", ["queue"]
)
QUEUE_PENDING = Gauge(
    "deskmate_queue_pending", "Entries handed to a consumer and not finished", ["queue"]
)
QUEUE_OLDEST_AGE = Gauge(
    "deskmate_queue_oldest_pending_age_seconds",
    "Age of the oldest unfinished entry of a queue (0 when empty)",
    ["queue"],
)
HANDOFFS_WAITING = Gauge("deskmate_handoffs_waiting", "Open handoffs nobody has claimed yet")
PROCESSES = Gauge("deskmate_processes_alive", "deskmate processes with a live heartbeat")
MODEL = Info("deskmate_model", "The model version every process serves (model:active)")
SCRAPE_ERRORS = Counter(
    "deskmate_metrics_refresh_errors_total", "Scrapes whose Redis figures could not be read"
)


served_model = {"version": ""}  # the model version of this process's latest reply


def record_decision(channel: str, action: str, model_version: str = "") -> None:
    """Count one brain decision (and a handoff among them)."""
    if model_version:
        served_model["version"] = model_version
    DECISIONS.labels(channel=channel, action=action).inc()
    if action == "handoff":
        HANDOFFS.labels(channel=channel).inc()


def record_delivery(channel: str, received: float, now: float | None = None) -> None:
    """Count one delivered reply and how long it took since its message arrived."""
    MESSAGES_OUT.labels(channel=channel).inc()
    if received:
        now = time.time() if now is None else now
        REPLY_LATENCY.labels(channel=channel).observe(max(0.0, now - received))


def record_redelivery(channel: str) -> None:
    """Count one reply sent again after a platform call with an unknown outcome."""
    REDELIVERIES.labels(channel=channel).inc()
