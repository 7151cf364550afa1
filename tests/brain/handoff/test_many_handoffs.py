"""The goal test: 200 handoffs driven at once through the real brain and state machine on
real Redis, by two "processes" (two brains on their own connections), with randomly
interleaved claims (two agents at once), releases, transfers, agent replies, resolves,
customer messages, cancels, ratings, Slack retries (an event delivered twice) and process
kills (a worker cancelled mid-message, its message then redelivered to the other process).

Customer-side and inbox work of one conversation is serialised as the message flow does
(its per-conversation lock); desk actions (claim, release, transfer) are not, as in
production. At the end every conversation is in exactly one valid state, its transitions
in the transcripts form one unbroken chain ending in that state, the queue sets agree,
and no customer message is lost or shown to anyone else."""

from __future__ import annotations

import asyncio
import json
import random
from collections import defaultdict
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis

from brain.answering.backends import QuoteBackend
from brain.conversations import ConversationStore
from brain.handoff.machine import HELD, WAITING, Change, Event, State
from brain.pipeline import RESOLVE, Brain
from brain.redis_server import EmbeddedRedis, client
from brain.types import Inbound
from retrieval.retriever import Retriever

CONVERSATIONS = 200
STEPS = 10
AGENTS = ("UANNA", "UBEN", "UCHLOE")


@dataclass
class Process:
    brain: Brain
    redis: aioredis.Redis


async def test_200_handoffs_under_races_retries_and_kills_end_consistent(
    redis_server: EmbeddedRedis, redis: aioredis.Redis, retriever: Retriever
) -> None:
    rng = random.Random(19)
    processes = []
    for _ in range(2):
        connection = client(redis_server.url)
        store = ConversationStore(connection, prefix="dm:", history_turns=200, ttl_seconds=3600)
        processes.append(Process(Brain(retriever, store, QuoteBackend()), connection))
    locks = defaultdict(asyncio.Lock)  # the flow's per-conversation lock
    sent: dict[str, list[str]] = defaultdict(list)  # customer messages, by conversation
    answered_while_held: list[tuple[str, str]] = []
    relayed: dict[str, list[str]] = defaultdict(list)  # agent texts that reached a customer
    counter = iter(range(10**9))

    def inbound(conversation: str, text: str, *, agent: str = "") -> Inbound:
        return Inbound(
            "telegram",
            conversation,
            agent or conversation,
            f"m{next(counter)}",
            text,
            agent=bool(agent),
        )

    async def worker(conversation: str, message: Inbound) -> str:
        """One inbox entry, as the flow runs it: under the conversation's lock, on either
        process; sometimes that process dies mid-message and the other redelivers it."""
        async with locks[conversation]:
            first, second = rng.sample(processes, 2)
            if rng.random() < 0.15:  # a kill: cancelled after a few scheduling points
                task = asyncio.create_task(first.brain.handle(message))
                for _ in range(rng.randint(0, 6)):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    reply = await task
                    return reply.text  # it finished before the kill
                except asyncio.CancelledError:
                    pass
            reply = await second.brain.handle(message)
            return reply.text

    async def state(conversation: str) -> State:
        return (await processes[0].brain.store.handoff_record("telegram", conversation)).state

    async def desk(conversation: str, change: Change) -> None:
        """A desk action, straight on the machine from either process (not serialised)."""
        process = rng.choice(processes)
        await process.brain.store.handoffs.apply("telegram", conversation, change)

    # Steps of many conversations run at once; the bound keeps within the connection pool.
    running = asyncio.Semaphore(12)

    async def life(number: int) -> None:
        for step in range(STEPS):
            await asyncio.sleep(rng.random() * 0.002)
            async with running:
                await act(f"c{number}", step)

    async def act(conversation: str, step: int) -> None:
        roll = rng.random()
        current = await state(conversation)
        if current in (State.BOT, State.RESOLVED) and roll < 0.5:
            await worker(conversation, inbound(conversation, "/human"))
        elif roll < 0.25:  # two agents press "I'll take it" at once (and Slack retries)
            agents = rng.sample(AGENTS, 2)
            await asyncio.gather(
                *(desk(conversation, Change(Event.CLAIM, agent=a)) for a in agents),
                desk(conversation, Change(Event.CLAIM, agent=agents[0])),
            )
        elif roll < 0.32:
            await desk(conversation, Change(Event.RELEASE, agent=rng.choice(AGENTS)))
        elif roll < 0.38:
            await desk(
                conversation,
                Change(Event.TRANSFER, agent=AGENTS[0], to_agent=rng.choice(AGENTS)),
            )
        elif roll < 0.6:  # the customer writes
            async with locks[conversation]:
                held = (await state(conversation)) in HELD
            text = f"[{conversation}] message {step}"
            sent[conversation].append(text)
            if held:
                reply = await worker(conversation, inbound(conversation, text))
                if reply:
                    answered_while_held.append((conversation, reply))
            else:
                await worker(conversation, inbound(conversation, "👍"))
                sent[conversation].pop()
        elif roll < 0.75:  # an agent answers in the thread
            text = f"[{conversation}] agent answer {step}"
            reply = await worker(
                conversation, inbound(conversation, text, agent=rng.choice(AGENTS))
            )
            if reply:
                relayed[conversation].append(reply)
        elif roll < 0.88:  # resolve, and Slack delivers the press twice
            resolve = inbound(conversation, RESOLVE, agent=rng.choice(AGENTS))
            first = await worker(conversation, resolve)
            second = await worker(conversation, resolve)
            assert not (first and second), "the customer was told twice"
        else:
            await worker(conversation, inbound(conversation, "/bot"))

    await asyncio.wait_for(asyncio.gather(*(life(n) for n in range(CONVERSATIONS))), 120)

    # Exactly one valid state each, and the stored sets agree with it.
    open_members = set(await redis.zrange("dm:handoffs:open", 0, -1))
    waiting_members = set(await redis.zrange("dm:handoffs:waiting", 0, -1))
    chains: dict[str, list[dict[str, object]]] = defaultdict(list)
    turns: dict[str, list[dict[str, object]]] = defaultdict(list)
    for _, fields in await redis.xrange("dm:transcripts"):
        data = json.loads(fields["data"])
        if fields["type"] == "handoff_state":
            chains[fields["conversation"]].append(data)
        elif fields["type"] == "turn":
            turns[fields["conversation"]].append(data["turn"])
    states = set()
    for number in range(CONVERSATIONS):
        conversation = f"c{number}"
        current = await state(conversation)
        states.add(current)
        member = f"telegram:{conversation}"
        assert (member in open_members) == (current in HELD), conversation
        assert (member in waiting_members) == (current in WAITING), conversation
        # The transitions recorded form one chain from the bot to the state stored.
        previous = "bot"
        for transition in chains[conversation]:
            assert transition["from"] == previous, (conversation, chains[conversation])
            previous = str(transition["to"])
        assert previous == current.value, conversation
        record = await processes[0].brain.store.handoff_record("telegram", conversation)
        if current is State.CLAIMED:
            assert record.agent in AGENTS
        # Every customer message is in its own conversation; none anywhere else.
        users = [str(t["text"]) for t in turns[conversation] if t["role"] == "user"]
        assert set(sent[conversation]) <= set(users), conversation
        assert all(f"[{conversation}]" in text for text in users if text.startswith("[")), (
            conversation
        )
        agents = [str(t["text"]) for t in turns[conversation] if t["role"] == "agent"]
        assert all(text.startswith(f"[{conversation}]") for text in agents)
        assert all(text.startswith(f"[{conversation}]") for text in relayed[conversation])
    assert answered_while_held == []  # the bot stayed quiet while a person held it
    assert State.CLAIMED in states and State.BOT in states  # the run went through both
    assert sum(len(chain) for chain in chains.values()) > CONVERSATIONS * 3
    for process in processes:
        await process.redis.aclose()


@pytest.mark.parametrize("attempts", [8])
async def test_concurrent_claims_have_one_winner(
    store: ConversationStore, redis: aioredis.Redis, attempts: int
) -> None:
    await store.start_handoff("telegram", "9", "asked for a person", user_id="9")
    outcomes = await asyncio.gather(
        *(
            store.handoffs.apply("telegram", "9", Change(Event.CLAIM, agent=f"U{n}"))
            for n in range(attempts)
        )
    )
    winners = [o for o in outcomes if o.applied]
    assert len(winners) == 1
    record = await store.handoff_record("telegram", "9")
    assert record.state is State.CLAIMED and record.agent == winners[0].after.agent
    assert all(o.after.agent == record.agent for o in outcomes if not o.applied)
    assert await redis.llen("dm:handoffs:claim-seconds") == 1
