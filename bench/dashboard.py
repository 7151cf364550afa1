"""Dashboard overview render time over 100,000 conversations, and content-gap purity.

Render: a synthetic 5,000-conversation transcripts stream is folded for real (timed), then
day counters standing for 100,000 conversations over 90 days are written directly
(folding 100,000 conversations in this benchmark would take minutes on 2 cores and
measure the fold, not the view); the overview (fold of what is new + 30 days of counters
+ figures + chart + HTML) is then rendered 20 times. Goal: < 300 ms.

Purity: the banking77-oos dev in-scope queries are treated as unanswered questions,
clustered as the gap report does (embedder, threshold chosen by the product), and scored
against their intent labels. Goal: >= 0.80.

    python -m bench.dashboard [--no-purity]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from bots.dashboard.pages import chart_svg
from brain.insights.aggregates import Insights, bucket_of, day_of
from brain.insights.gaps import DEFAULT_THRESHOLD, cluster_labels, purity
from brain.keys import RedisKeys
from brain.redis_server import open_redis
from brain.transcript_events import transcript_entry

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "banking77-oos"


async def render_bench(conversations: int = 100_000, folded: int = 5_000) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        async with open_redis(None, Path(tmp)) as redis:
            keys = RedisKeys("dm:")
            now = time.time()
            async with redis.pipeline(transaction=False) as pipe:
                for i in range(folded):
                    t = now - 3600 - i * 30
                    user = {"turn": {"role": "user", "text": f"question {i % 97}", "time": t}}
                    bot = {
                        "turn": {
                            "role": "assistant",
                            "text": "a",
                            "time": t + 1,
                            "action": "answer",
                            "sources": [f"f{i % 50}"],
                        }
                    }
                    pipe.xadd(
                        keys.transcripts, transcript_entry("turn", "telegram", str(i), "u", user, t)
                    )
                    pipe.xadd(
                        keys.transcripts,
                        transcript_entry("turn", "telegram", str(i), "u", bot, t + 1),
                    )
                await pipe.execute()
            insights = Insights(redis, "dm:")
            started = time.perf_counter()
            await insights.update(now)
            fold_s = time.perf_counter() - started
            per_day = conversations // 90
            async with redis.pipeline(transaction=False) as pipe:
                for d in range(90):
                    day = day_of(now - d * 86400)
                    pipe.hset(
                        keys.stats_day(day),
                        mapping={
                            "conversations": per_day,
                            "conversations:telegram": per_day // 2,
                            "conversations:slack": per_day - per_day // 2,
                            "closed": per_day,
                            "answered": per_day * 7 // 10,
                            "resolved": per_day // 2,
                            "handed_off": per_day // 10,
                            "ratings:up": 40,
                            "ratings:down": 9,
                            **{f"first_reply:{bucket_of(s / 10)}": 20 for s in range(5, 400, 7)},
                        },
                    )
                await pipe.execute()
            from bots.dashboard.pages import _env  # the page template, rendered as served

            times = []
            for _ in range(20):
                started = time.perf_counter()
                from brain.insights.report import build_report

                await insights.update()
                first, last = day_of(now - 29 * 86400), day_of(now)
                report = build_report(first, last, await insights.days(first, last))
                _env.get_template("overview.html").render(
                    r=report,
                    chart=chart_svg(report),
                    model="m",
                    ms=0,
                    user="bench",
                    csrf="x",
                    pct=lambda v: v,
                    secs=lambda v: v,
                )
                times.append((time.perf_counter() - started) * 1000)
            return {
                "conversations": per_day * 90,
                "fold_seconds_per_1000_conversations": fold_s / folded * 1000,
                "render_ms_p50": statistics.median(times),
                "render_ms_max": max(times),
            }


def purity_bench() -> dict[str, float]:
    from retrieval.embedder import Embedder

    rows = [json.loads(line) for line in (DATA / "queries-dev.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["relevant"]]
    vectors = Embedder().encode([r["query"] for r in rows])
    labels = cluster_labels(vectors, DEFAULT_THRESHOLD)
    truth = [r["relevant"][0] for r in rows]
    return {
        "questions": len(rows),
        "intents": len(set(truth)),
        "clusters": len(set(labels.tolist())),
        "threshold": DEFAULT_THRESHOLD,
        "purity": round(purity(labels.tolist(), truth), 3),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-purity", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(render_bench()), indent=2))
    if not args.no_purity and DATA.exists():
        print(json.dumps(purity_bench(), indent=2))


if __name__ == "__main__":
    main()
