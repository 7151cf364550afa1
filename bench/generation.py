"""Generation throughput, latency and answer quality of the dialogue model.

    python -m bench.generation                    # speed at 1/4/16 concurrent conversations
    python -m bench.generation --quality 100      # + answer quality on stackfaq dev
    python -m bench.generation --no-int8          # the same in fp32
    python -m bench.generation --engines lean     # only the lean engine
    python -m bench.generation --engines lean --concurrency 1 16   # + llama.cpp side by side

llama.cpp: with llama-cpp-python installed (`pip install -e .[bench]`) and the default
model, the same GGUF weights run on llama.cpp in the same run: the bundled Q4_1 file and a
Q8_0 requantised from it once into the data dir. One conversation: answers alternate
lean, llama.cpp Q8_0, llama.cpp Q4_1 on the same prompt token ids (greedy), so load
changes hit all alike; N conversations: llama-cpp-python answers one request at a time,
as its server does. Prints each rate and lean's ratio to llama.cpp Q8_0.

Speed: each of N concurrent conversations asks sample-FAQ questions one after another
through the hf generator (prompts are built beforehand; retrieval is timed in
bench.retrieval), once per engine (lean = continuous batching on the lean Llama engine,
generate = transformers' generate with dynamic batching), in one run so the ratio is
measured under the same conditions. Answer tok/s = generated tokens (up to each
answer's end) over wall time, prompt processing included; decode tok/s = generated
tokens over time spent in decode steps, the rate llama.cpp reports as "eval" (lean only;
its prompt rate is reported separately); full-batch decode = the same over the steps in
which all N conversations were decoding (not waiting for their next prompt, not done).

Quality: a sample of stackfaq dev queries goes through the whole brain (retrieval,
policy, generation, citation policy) with the hf backend and with the quote backend,
scored against the reference answers.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brain import compute
from brain.answering.backends import AnswerBackend, QuoteBackend
from brain.answering.batching import BatchingOptions, DecodeStats
from brain.answering.grounded import GenerativeBackend
from brain.answering.hf_generator import HFGenerator, HFOptions
from brain.answering.model_loading import DEFAULT_MODEL, embedded_gguf, model_cache_dir
from brain.conversations import ConversationStore
from brain.evaluation.metrics import rouge_l, token_f1
from brain.pipeline import Brain
from brain.prompt import PASSAGES, Messages, Passage, fit_prompt, render_prompt
from brain.redis_server import EmbeddedRedis, client
from brain.settings import SAMPLE_FAQ
from brain.types import Inbound
from retrieval.embedder import Embedder
from retrieval.evaluation import load_queries
from retrieval.faq import load_faq
from retrieval.index import FaqIndex
from retrieval.retriever import Retriever

_ROOT = Path(__file__).resolve().parent.parent
# The shared data sits beside the main checkout (../shared), or two up from a worktree.
STACKFAQ = (
    next(
        (p for p in (_ROOT.parent / "shared", _ROOT.parent.parent / "shared") if p.exists()),
        _ROOT.parent / "shared",
    )
    / "data"
    / "stackfaq"
)


@dataclass
class SpeedRow:
    engine: str
    concurrency: int
    answers: int
    tokens: int
    seconds: float
    latencies: list[float]
    decode: DecodeStats | None  # lean engine only
    first_tokens: list[float]  # seconds to the first piece of each answer

    @property
    def p50(self) -> float:
        return statistics.median(self.latencies)

    @property
    def aggregate(self) -> float:
        return self.tokens / self.seconds

    HEADER = (
        "engine    concurrency  answers  tok/answer  answer tok/s  per stream  "
        "decode tok/s  full-batch decode  prompt tok/s  p50 (s)  p95 (s)  first token p50 (s)"
    )

    def line(self) -> str:
        p50 = statistics.median(self.latencies)
        p95 = sorted(self.latencies)[max(0, round(0.95 * len(self.latencies)) - 1)]
        decode = prompt = full = "-"
        if self.decode is not None and self.decode.decode_seconds:
            decode = f"{self.decode.decoded_tokens / self.decode.decode_seconds:.1f}"
            prompt = f"{self.decode.prompt_tokens / self.decode.prefill_seconds:.0f}"
            full_rate = self.decode.rate_at(self.concurrency)
            full = f"{full_rate:.1f}" if full_rate is not None else "-"
        return (
            f"{self.engine:8}  {self.concurrency:>11}  {self.answers:>7}  "
            f"{self.tokens / self.answers:>10.1f}  {self.aggregate:>12.1f}  "
            f"{self.aggregate / self.concurrency:>10.1f}  {decode:>12}  {full:>17}  "
            f"{prompt:>12}  {p50:>7.2f}  {p95:>7.2f}  {statistics.median(self.first_tokens):>19.2f}"
        )


async def speed(
    generator: HFGenerator, retriever: Retriever, concurrency: int, rounds: int
) -> SpeedRow:
    questions = [entry.question for entry in retriever.index.entries]
    tokenizer = generator.tokenizer
    latencies: list[float] = []
    first_tokens: list[float] = []
    tokens = 0

    # Prompts are built (retrieval, fitting) before the clock starts: this measures
    # generation, and retrieval's own cost is in bench.retrieval.
    prompts: dict[int, list[Messages]] = {}
    for number in range(concurrency):
        for turn in range(rounds):
            question = questions[(number * rounds + turn) % len(questions)]
            hits = compute.call(retriever.search, question)[:PASSAGES]
            fitted = fit_prompt(
                question,
                [Passage.from_hit(h) for h in hits],
                [],
                generator.count_tokens,
                generator.context_tokens,
            )
            prompts.setdefault(number, []).append(fitted.messages)

    async def conversation(number: int) -> None:
        nonlocal tokens
        for messages in prompts[number]:
            started = time.perf_counter()
            pieces: list[str] = []
            async for piece in generator.stream(messages):
                if not pieces:
                    first_tokens.append(time.perf_counter() - started)
                pieces.append(piece)
            latencies.append(time.perf_counter() - started)
            text = "".join(pieces)
            # +1: the end-of-turn token the model also had to generate (unless cut off).
            count = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            tokens += min(count + 1, generator.options.max_new_tokens)

    if generator.continuous is not None:
        generator.continuous.stats = DecodeStats()
    started = time.perf_counter()
    await asyncio.gather(*(conversation(n) for n in range(concurrency)))
    seconds = time.perf_counter() - started
    stats = generator.continuous.stats if generator.continuous is not None else None
    return SpeedRow(
        generator.engine,
        concurrency,
        len(latencies),
        tokens,
        seconds,
        latencies,
        stats,
        first_tokens,
    )


@dataclass
class Answer:
    """One timed answer: seconds to the first token and to the end, tokens generated
    (the end-of-turn token included, as llama.cpp counts it)."""

    first: float
    total: float
    tokens: int

    @property
    def decode_rate(self) -> float:
        return (self.tokens - 1) / max(self.total - self.first, 1e-9)


def llama_cpp_files(data_dir: Path) -> dict[str, Path]:
    """The default model's GGUF files for llama.cpp: the bundled Q4_1 and a Q8_0 made from
    it once (llama.cpp's own requantisation); {} without the bundled model."""
    import llama_cpp

    source = embedded_gguf(DEFAULT_MODEL)
    if source is None:
        return {}
    q8 = model_cache_dir(data_dir, DEFAULT_MODEL).parent / source.name.replace("Q4_1", "Q8_0")
    if not q8.exists():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True
        staging = q8.with_suffix(".partial")
        q8.parent.mkdir(parents=True, exist_ok=True)
        code = llama_cpp.llama_model_quantize(
            str(source).encode(), str(staging).encode(), ctypes.byref(params)
        )
        if code != 0:
            raise RuntimeError(f"llama.cpp could not requantise {source.name} to Q8_0 ({code})")
        staging.rename(q8)
    return {"Q8_0": q8, "Q4_1": source}


class LlamaCpp:
    """llama-cpp-python on one GGUF file, greedy, as many threads as torch uses."""

    def __init__(self, path: Path, threads: int, context: int) -> None:
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            n_ctx=context,
            n_threads=threads,
            n_threads_batch=threads,
            n_batch=512,
            verbose=False,
        )

    def answer(self, prompt: list[int], max_new_tokens: int, stop_ids: set[int]) -> Answer:
        started = time.perf_counter()
        first, tokens = 0.0, 0
        # reset=True keeps the prompt start shared with the previous one, like lean's prefix.
        for token in self.llm.generate(prompt, top_k=1, temp=0.0, reset=True):
            if tokens == 0:
                first = time.perf_counter() - started
            tokens += 1
            if token in stop_ids or tokens >= max_new_tokens:
                break
        return Answer(first, time.perf_counter() - started, tokens)


async def lean_answer(generator: HFGenerator, prompt: list[int]) -> Answer:
    assert generator.continuous is not None
    started = time.perf_counter()
    first, tokens = 0.0, 0
    async for _ in generator.continuous.stream(prompt):
        if tokens == 0:
            first = time.perf_counter() - started
        tokens += 1
    total = time.perf_counter() - started
    # +1: the end-of-turn token the engine also generated (unless cut off).
    return Answer(first, total, min(tokens + 1, generator.options.max_new_tokens))


def prompt_ids(generator: HFGenerator, retriever: Retriever, count: int) -> list[list[int]]:
    """Token ids of `count` sample-FAQ prompts (`PASSAGES` passages each), as served."""
    tokenizer = generator.tokenizer
    questions = [entry.question for entry in retriever.index.entries]
    prompts = []
    for number in range(count):
        question = questions[number % len(questions)]
        hits = compute.call(retriever.search, question)[:PASSAGES]
        passages = [Passage.from_hit(h) for h in hits]
        fitted = fit_prompt(
            question, passages, [], generator.count_tokens, generator.context_tokens
        )
        text = render_prompt(tokenizer, fitted.messages)
        prompts.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
    return prompts


def _summary(name: str, answers: list[Answer]) -> str:
    decode = statistics.median(a.decode_rate for a in answers)
    first = statistics.median(a.first for a in answers)
    total = statistics.median(a.total for a in answers)
    tokens = sum(a.tokens for a in answers) / len(answers)
    return (
        f"{name:18}  {len(answers):>7}  {tokens:>10.1f}  {decode:>12.1f}  {first:>15.2f}  "
        f"{total:>13.2f}"
    )


async def llama_cpp_concurrent(
    engine: LlamaCpp,
    prompts: list[list[int]],
    concurrency: int,
    args: argparse.Namespace,
    stop: set[int],
) -> tuple[float, float]:
    """Answer tok/s and p50 time to a full answer of `concurrency` conversations on one
    llama.cpp model answering one request at a time (as llama-cpp-python's server does)."""
    lock = asyncio.Lock()
    latencies: list[float] = []
    tokens = 0

    async def conversation(number: int) -> None:
        nonlocal tokens
        for turn in range(args.rounds):
            prompt = prompts[(number * args.rounds + turn) % len(prompts)]
            started = time.perf_counter()
            async with lock:
                answer = await compute.run(engine.answer, prompt, args.max_new_tokens, stop)
            latencies.append(time.perf_counter() - started)
            tokens += answer.tokens

    started = time.perf_counter()
    await asyncio.gather(*(conversation(n) for n in range(concurrency)))
    return tokens / (time.perf_counter() - started), statistics.median(latencies)


async def compare_llama_cpp(
    generator: HFGenerator,
    retriever: Retriever,
    data_dir: Path,
    args: argparse.Namespace,
    lean_rows: dict[int, SpeedRow],
) -> None:
    """lean vs llama.cpp on the same weights, in this run (see the module docstring)."""
    import torch

    try:
        files = llama_cpp_files(data_dir)
    except ImportError:
        print("\nllama.cpp: llama-cpp-python is not installed (pip install -e .[bench]); skipped")
        return
    if args.model != DEFAULT_MODEL or not files:
        print("\nllama.cpp: compared only on the bundled default model; skipped")
        return
    threads = torch.get_num_threads()
    context = generator.context_tokens + generator.options.max_new_tokens
    engines = {
        f"llama.cpp {kind}": compute.call(LlamaCpp, path, threads, context)
        for kind, path in files.items()
    }
    stop = generator.stop_ids
    prompts = prompt_ids(generator, retriever, args.single)
    answers: dict[str, list[Answer]] = {"lean": [], **{name: [] for name in engines}}
    for prompt in prompts:  # alternated, so load changes hit every engine alike
        answers["lean"].append(await lean_answer(generator, prompt))
        for name, engine in engines.items():
            answers[name].append(
                await compute.run(engine.answer, prompt, args.max_new_tokens, stop)
            )
    print(
        f"\none conversation, {len(prompts)} prompts (~{statistics.mean(map(len, prompts)):.0f} "
        f"tokens), answers alternated, {threads} threads, load {os.getloadavg()[0]:.1f}"
    )
    print("engine              answers  tok/answer  decode tok/s  first token p50  answer p50 (s)")
    for name, engine_answers in answers.items():
        print(_summary(name, engine_answers))
    lean, q8 = answers["lean"], answers["llama.cpp Q8_0"]
    decode_ratio = statistics.median(a.decode_rate for a in lean) / statistics.median(
        a.decode_rate for a in q8
    )
    time_ratio = statistics.median(a.total for a in lean) / statistics.median(a.total for a in q8)
    print(
        f"lean / llama.cpp Q8_0: decode tok/s {decode_ratio:.2f}x, "
        f"time to a full answer {time_ratio:.2f}x"
    )

    q8_engine = engines["llama.cpp Q8_0"]
    for concurrency, row in lean_rows.items():
        if concurrency == 1:
            continue
        rate, p50 = await llama_cpp_concurrent(q8_engine, prompts, concurrency, args, stop)
        print(
            f"{concurrency} conversations, llama.cpp Q8_0 one request at a time: answer tok/s "
            f"{rate:.1f}, p50 {p50:.2f} s; lean (run before it) "
            f"{row.aggregate:.1f}, p50 {row.p50:.2f} s: {row.aggregate / rate:.2f}x, "
            f"load {os.getloadavg()[0]:.1f}"
        )


@dataclass
class QualityRow:
    name: str
    n: int
    f1: float
    rouge: float
    cites_right: float
    answered: float
    wrong_handoff: float
    clarified: float
    fallbacks: float
    seconds: float

    def line(self) -> str:
        return (
            f"{self.name:28}  {self.n:>4}  {self.f1:>6.3f}  {self.rouge:>7.3f}  "
            f"{self.cites_right:>10.3f}  {self.answered:>8.3f}  {self.wrong_handoff:>8.3f}  "
            f"{self.clarified:>7.3f}  {self.fallbacks:>9.3f}  {self.seconds:>6.0f}"
        )


async def quality(
    name: str,
    backend: AnswerBackend,
    retriever: Retriever,
    redis_url: str,
    sample: Sequence[object],
) -> QualityRow:
    redis = client(redis_url)
    await redis.flushall()
    store = ConversationStore(redis, prefix="bench:", history_turns=6, ttl_seconds=3600)
    brain = Brain(retriever, store, backend)
    limit = asyncio.Semaphore(16)

    async def ask(number: int, query: object) -> tuple[object, object]:
        async with limit:
            inbound = Inbound("console", f"q{number}", "bench", str(number), query.query)  # type: ignore[attr-defined]
            return query, await brain.handle(inbound)

    started = time.perf_counter()
    results = await asyncio.gather(*(ask(n, q) for n, q in enumerate(sample)))
    seconds = time.perf_counter() - started
    await redis.aclose()
    f1s, rouges, right, answered, handoff, clarified, fallback = [], [], 0, 0, 0, 0, 0
    for query, reply in results:
        reference = query.answer or ""  # type: ignore[attr-defined]
        text = reply.text if reply.action == "answer" else ""  # type: ignore[attr-defined]
        f1s.append(token_f1(text, reference))
        rouges.append(rouge_l(text, reference) if text else 0.0)
        if reply.action == "answer":  # type: ignore[attr-defined]
            answered += 1
            sources = reply.sources  # type: ignore[attr-defined]
            right += bool(sources) and sources[0].id in query.relevant  # type: ignore[attr-defined]
            fallback += reply.model_version.startswith("quote (fallback")  # type: ignore[attr-defined]
        handoff += reply.action == "handoff"  # type: ignore[attr-defined]
        clarified += reply.action == "clarify"  # type: ignore[attr-defined]
    n = len(results)
    return QualityRow(
        name,
        n,
        statistics.mean(f1s),
        statistics.mean(rouges),
        right / max(answered, 1),
        answered / n,
        handoff / n,
        clarified / n,
        fallback / max(answered, 1),
        seconds,
    )


async def run(args: argparse.Namespace) -> None:
    data_dir = Path(
        os.environ.get("DESKMATE_DATA_DIR") or tempfile.mkdtemp(prefix="deskmate-bench-")
    )
    import torch

    # All model work on the compute thread, as the bot does it (see brain.compute).
    embedder = compute.call(Embedder)
    sample_index = compute.call(FaqIndex.build, load_faq([SAMPLE_FAQ]), embedder)
    sample_retriever = Retriever(embedder, sample_index)
    generator: HFGenerator | None = None
    for engine in args.engines:
        options = HFOptions(
            device="cpu",
            engine=engine,
            int8=not args.no_int8,
            threads=args.threads,
            max_new_tokens=args.max_new_tokens,
            batching=BatchingOptions(max_batch=16, window_s=0.01),
        )
        if generator is not None:
            await generator.aclose()
        started = time.perf_counter()
        generator = compute.call(HFGenerator.load, args.model, data_dir, options)
        print(
            f"\nmodel {generator.version}  engine={engine}  int8={options.int8}  "
            f"threads={torch.get_num_threads()}  max_new_tokens={options.max_new_tokens}  "
            f"loaded in {time.perf_counter() - started:.1f} s"
        )
        await generator.generate([[{"role": "user", "content": "warm up"}]])
        print(SpeedRow.HEADER)
        rows = {}
        for concurrency in args.concurrency:
            row = await speed(generator, sample_retriever, concurrency, args.rounds)
            rows[concurrency] = row
            print(row.line(), flush=True)
    if generator is None:
        return
    if args.llama_cpp and generator.engine == "lean":
        await compare_llama_cpp(generator, sample_retriever, data_dir, args, rows)

    if args.quality:
        faq = args.stackfaq / "faqs.jsonl"
        queries = load_queries(args.stackfaq / "queries-dev.jsonl")
        sample = random.Random(0).sample(queries, min(args.quality, len(queries)))
        retriever = Retriever(embedder, compute.call(FaqIndex.build, load_faq([faq]), embedder))
        print(
            f"\nanswer quality on stackfaq dev, {len(sample)} queries (seed 0), default thresholds"
        )
        print(
            f"{'backend':28}  {'n':>4}  {'F1':>6}  {'ROUGE-L':>7}  {'cites right':>10}  "
            f"{'answered':>8}  {'handoff':>8}  {'clarify':>7}  {'fallbacks':>9}  {'secs':>6}"
        )
        with EmbeddedRedis(Path(tempfile.mkdtemp(prefix="deskmate-bench-redis-"))) as server:
            backends: list[tuple[str, AnswerBackend]] = [
                ("quote", QuoteBackend()),
                (generator.version, GenerativeBackend(generator)),
            ]
            for name, backend in backends:
                quality_row = await quality(name, backend, retriever, server.url, sample)
                print(quality_row.line(), flush=True)
    await generator.aclose()


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--no-int8", action="store_true", help="run in fp32")
    parser.add_argument(
        "--engines",
        nargs="*",
        choices=("lean", "generate"),
        default=["generate", "lean"],
        help="engines to measure, in this order; the last one also answers --quality",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 16])
    parser.add_argument("--rounds", type=int, default=2, help="answers per conversation")
    parser.add_argument(
        "--no-llama-cpp",
        dest="llama_cpp",
        action="store_false",
        help="skip the llama.cpp comparison (it runs when llama-cpp-python is installed)",
    )
    parser.add_argument(
        "--single", type=int, default=8, help="prompts in the one-conversation comparison"
    )
    parser.add_argument("--quality", type=int, default=0, metavar="N", help="stackfaq dev queries")
    parser.add_argument("--stackfaq", type=Path, default=STACKFAQ, help="stackfaq data folder")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    asyncio.run(run(parse(argv)))


if __name__ == "__main__":
    main()
