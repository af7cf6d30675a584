"""The fast backend (llama.cpp on the embedded Q4_K_M GGUF) against the transformers + peft reference."""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from pathlib import Path

import pytest

from companion.llm.base import GenerationParams, GenerationRequest
from companion.messages import ChatMessage
from companion.plugins import PluginContext, available
from companion.prompt import normalize_turns

pytestmark = pytest.mark.slow

SYSTEM = ChatMessage(role="system", content="You are Mochi, a baker in a seaside town.")
PROBES = [
    [SYSTEM, ChatMessage(role="user", content="Tell me about your bakery.")],
    [ChatMessage(role="user", content="What is the capital of France?")],
    [SYSTEM, ChatMessage(role="user", content="你好！你是谁？")],
    [ChatMessage(role="user", content="写一首关于大海的短诗。")],
    [SYSTEM, ChatMessage(role="user", content="Can you recommend a bread for breakfast?")],
    [ChatMessage(role="user", content="Count from one to ten in English.")],
]
GREEDY_TOKENS = 12
HELD_OUT = (
    "The harbour was quiet before dawn. Mochi tied her apron, switched on the old oven and "
    "listened to the gulls while the first loaves rose. Her grandmother had taught her that "
    "bread keeps the rhythm of the town: fishermen come at five, children at seven, and the "
    "tourists only when the sun is high.\n\n"
    "清晨的海港很安静。糯米系好围裙，打开那台旧烤箱，一边听着海鸥的叫声，一边等第一批面包发酵。"
    "外婆告诉过她，面包守着小镇的节奏：渔民五点来，孩子们七点来，游客要等到太阳高高升起才来。"
)


def collect(llm, request: GenerationRequest) -> str:
    async def run() -> list[str]:
        return [piece async for piece in llm.stream(request)]

    return "".join(asyncio.run(run()))


def greedy(n: int = 16, penalty: float = 1.0, stop: list[str] | None = None) -> GenerationParams:
    return GenerationParams(max_new_tokens=n, temperature=0.0, repetition_penalty=penalty, stop=stop or [])


def reference_greedy_ids(model, prompt_ids, n: int, penalty: float = 1.0) -> list[int]:
    import torch

    with torch.inference_mode():
        out = model.generate(
            prompt_ids,
            attention_mask=torch.ones_like(prompt_ids),
            max_new_tokens=n,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            repetition_penalty=penalty,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, prompt_ids.shape[1] :].tolist()


def fast_greedy_ids(fast_llm, messages, n: int, adapter: Path | None, penalty: float = 1.0) -> list[int]:
    """Greedy ids straight from the engine (no end-of-turn stop, like reference_greedy_ids)."""
    engine = fast_llm.engine
    tokens, _ = fast_llm.prompt_tokens(messages, n)
    handle, reason = fast_llm.adapter_route(adapter)
    assert reason is None, reason
    engine.set_adapter(handle)

    def generate() -> list[int]:
        engine.prepare(tokens)
        out = []
        with engine.sampler(greedy(n, penalty), tokens) as sample:
            for _ in range(n):
                token = sample()
                out.append(token)
                engine.advance(token)
        return out

    return fast_llm._compute.run(generate)  # the engine evaluates on its compute thread only


@pytest.fixture(scope="module")
def reference_fp32(exact_model_dir, adapters):
    """transformers + peft in float32 on the GGUF's weights dequantized exactly (not the app's
    bfloat16 folder): one base model, the adapters attached by name; `get(kind)` selects one (None:
    the bare base)."""
    import contextlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(exact_model_dir, dtype=torch.float32)
    kinds = ["all_linear", "rslora"]
    model = PeftModel.from_pretrained(base, str(adapters[kinds[0]]), adapter_name=kinds[0])
    for kind in kinds[1:]:
        model.load_adapter(str(adapters[kind]), adapter_name=kind)
    model.eval()

    class Selected:
        def __init__(self, kind: str | None) -> None:
            self.kind = kind

        def _scope(self):
            if self.kind is None:
                return model.disable_adapter()
            model.set_adapter(self.kind)
            return contextlib.nullcontext()

        def __call__(self, ids):
            with self._scope():
                return model(ids)

        def generate(self, *args, **kwargs):
            with self._scope():
                return model.generate(*args, **kwargs)

    return Selected


@pytest.fixture(scope="module")
def reference_greedy(reference_fp32, local_llm):
    """The reference's first GREEDY_TOKENS greedy tokens on every probe, computed once per adapter."""
    found: dict[str | None, list[list[int]]] = {}

    def get(kind: str | None) -> list[list[int]]:
        if kind not in found:
            model = reference_fp32(kind)
            prompts = [local_llm.prompt_ids(GenerationRequest(messages=messages)) for messages in PROBES]
            found[kind] = [reference_greedy_ids(model, prompt, GREEDY_TOKENS) for prompt in prompts]
        return found[kind]

    return get


def held_out_logprobs(local_llm, reference_fp32, kind: str | None) -> tuple[list[int], list[float]]:
    """HELD_OUT's token ids and the reference's log-probabilities of tokens[1:]."""
    import torch

    ids = local_llm.tokenizer("<bos>" + HELD_OUT, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = reference_fp32(kind)(ids).logits[0, :-1].double()
    expected = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    return ids[0].tolist(), expected.tolist()


def perplexity(logprobs: list[float]) -> float:
    return math.exp(-sum(logprobs) / len(logprobs))


def agreeing(expected: list[int], got: list[int]) -> int:
    """How many first tokens are the same."""
    return next((i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b), len(expected))


def test_ci_has_the_fast_path() -> None:
    """CI installs llama-cpp-python (Makefile); elsewhere these tests skip without it."""
    import os

    if os.environ.get("CI"):
        import llama_cpp  # noqa: F401


def test_plugin_is_registered_and_the_default(tmp_path: Path) -> None:
    from companion.config import Settings

    assert "llamacpp" in available("llm")
    assert Settings(data_dir=tmp_path).llm.plugin == "llamacpp"


def test_tokens_match_the_reference_tokenizer(fast_llm, local_llm) -> None:
    texts = [
        "夏娜喜欢吃蜜瓜包",
        "Hello, world!  Two spaces,\ttab and\nnewline.",
        "emoji 🍞🐈‍⬛ and accents: café, naïve",
        "   leading spaces and trailing   ",
        "<start_of_turn>user\nmarkup inside text<end_of_turn>",
        "",
    ]
    for text in texts:
        expected = local_llm.tokenizer(text, add_special_tokens=False).input_ids
        assert fast_llm.engine.tokenize(text) == expected, text
        assert fast_llm.count_tokens(text) == local_llm.count_tokens(text)
    # A session's prompt: the persona as system text (Gemma has no system role: it heads the first
    # user turn), a conversation opened by her greeting, history, then the new turn.
    session = normalize_turns(
        [
            ChatMessage(role="system", content="You are Mochi. Stay in character.\n\n你是糯米，青澜镇的面包师。"),
            ChatMessage(role="assistant", content="欢迎光临月兔烘焙坊！"),
            ChatMessage(role="user", content="  今天有什么面包？ "),
            ChatMessage(role="assistant", content="Milk bread, and sesame rolls.\n"),
            ChatMessage(role="user", content="[World info]\nThe bakery opens at five.\n\nAnd tomorrow?"),
        ]
    )
    for messages in [*PROBES, session]:
        request = GenerationRequest(messages=messages)
        assert fast_llm.prompt_tokens(messages)[0] == local_llm.prompt_ids(request)[0].tolist()


@pytest.mark.parametrize("kind", [None, "all_linear", "rslora"])
def test_same_weights_give_the_reference_output(
    exact_fast, exact_adapters, local_llm, reference_fp32, reference_greedy, kind
) -> None:
    """Equivalence on the same footing: llama.cpp on the GGUF's weights dequantized to float32 (plain
    float32 matmuls) against transformers + peft in float32 on the same weights. Everything the fast
    path does (the rendered template, tokens, the converted adapter, the KV cache) is in the loop;
    only llama.cpp's quantized arithmetic is not. Every probe's first 12 greedy tokens are the
    reference's, and held-out perplexity is within 0.2% (measured: within 0.01%, largest log-prob
    difference 0.004-0.04 nats; a LoRA at the wrong scale costs +50%)."""
    adapter = exact_adapters[kind] if kind else None
    for messages, expected in zip(PROBES, reference_greedy(kind), strict=True):
        assert fast_greedy_ids(exact_fast, messages, GREEDY_TOKENS, adapter) == expected, messages
    ids, expected = held_out_logprobs(local_llm, reference_fp32, kind)
    got = exact_fast.token_logprobs(ids, adapter)
    assert len(got) == len(expected) > 100
    assert abs(perplexity(got) / perplexity(expected) - 1) < 0.002, (perplexity(got), perplexity(expected))
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) < 0.1


def test_repetition_penalty_is_the_reference_one(exact_fast, reference_fp32, local_llm) -> None:
    """Greedy decoding with a repetition penalty (the chat default is 1.1) picks the reference's
    tokens: the penalty falls on every token of prompt and reply (measured: penalising only the
    reply's tokens fails here), dividing positive logits and multiplying negative ones."""
    model = reference_fp32(None)
    for messages in PROBES[:3]:
        prompt = local_llm.prompt_ids(GenerationRequest(messages=messages))
        for penalty in (1.1, 1.8):
            expected = reference_greedy_ids(model, prompt, GREEDY_TOKENS, penalty)
            assert fast_greedy_ids(exact_fast, messages, GREEDY_TOKENS, None, penalty) == expected, (penalty, messages)
        assert reference_greedy_ids(model, prompt, GREEDY_TOKENS, 1.8) != reference_greedy_ids(
            model, prompt, GREEDY_TOKENS
        ), "the penalty changes nothing on this probe: the test would not see a wrong rule"


@pytest.mark.parametrize("kind", [None, "all_linear"])
def test_shipped_quantized_model_stays_close(
    fast_llm, adapters, local_llm, reference_fp32, reference_greedy, kind
) -> None:
    """The shipped Q4_K_M GGUF against the same float32 reference. Its weights are the reference's
    (dequantized from this file), but llama.cpp's quantized dot products round the activations to
    8 bits, which is all that is left between the two (see the test above): held-out perplexity
    +0.4-2.7% and 89-96% same top-1 token on Mochi's texts, so a late greedy token may part at a near
    tie. Bounds: most probes agree on all 12 first tokens, none on fewer than 4; perplexity within 4%
    (a wrong adapter or template costs far more)."""
    adapter = adapters[kind] if kind else None
    counts = [
        agreeing(expected, fast_greedy_ids(fast_llm, messages, GREEDY_TOKENS, adapter))
        for messages, expected in zip(PROBES, reference_greedy(kind), strict=True)
    ]
    ids, expected = held_out_logprobs(local_llm, reference_fp32, kind)
    got = fast_llm.token_logprobs(ids, adapter)
    ratio = perplexity(got) / perplexity(expected)
    print(f"quantized ({kind}): greedy agreement {counts} of {GREEDY_TOKENS}, perplexity x{ratio:.4f}")
    assert min(counts) >= 4 and sum(c == GREEDY_TOKENS for c in counts) >= len(PROBES) - 2, counts
    assert abs(ratio - 1) < 0.04, ratio


def test_adapter_changes_output_and_switches_off(fast_llm, adapters) -> None:
    messages = PROBES[0]
    base = fast_llm.token_logprobs(fast_llm.prompt_tokens(messages)[0])
    adapted = fast_llm.token_logprobs(fast_llm.prompt_tokens(messages)[0], adapters["qv"])
    assert max(abs(a - b) for a, b in zip(base, adapted, strict=True)) > 0.05
    text = collect(fast_llm, GenerationRequest(messages=messages, params=greedy(10)))
    collect(fast_llm, GenerationRequest(messages=messages, params=greedy(10), adapter=adapters["qv"]))
    assert collect(fast_llm, GenerationRequest(messages=messages, params=greedy(10))) == text


def test_second_turn_reuses_the_prefix(fast_llm, adapters) -> None:
    adapter = adapters["all_linear"]
    first = [SYSTEM, ChatMessage(role="user", content="Tell me about your bakery. " * 20)]
    reply = collect(fast_llm, GenerationRequest(messages=first, params=greedy(12, 1.1), adapter=adapter))
    cold_tokens = fast_llm.last_stats.prompt_tokens
    second = [*first, ChatMessage(role="assistant", content=reply), ChatMessage(role="user", content="And on Sunday?")]
    assert collect(fast_llm, GenerationRequest(messages=second, params=greedy(12, 1.1), adapter=adapter))
    stats = fast_llm.last_stats
    assert stats.reused_tokens >= cold_tokens - 2, stats
    assert stats.prompt_tokens - stats.reused_tokens < 40, stats


def test_reused_cache_gives_the_cold_logits(fast_llm, adapters) -> None:
    """The next-token distribution after a warm (reused-prefix) prompt is the cold one, up to
    llama.cpp's arithmetic, which differs with batch size (measured: top log-probs within ~0.2)."""
    import numpy as np

    engine = fast_llm.engine
    handle, _ = fast_llm.adapter_route(adapters["all_linear"])
    engine.set_adapter(handle)
    turn = [SYSTEM, ChatMessage(role="user", content="Tell me about your bakery. " * 10)]
    longer = [*turn, ChatMessage(role="assistant", content="Fresh bread."), ChatMessage(role="user", content="Why?")]
    first, _ = fast_llm.prompt_tokens(turn)
    second, _ = fast_llm.prompt_tokens(longer)
    on_engine_thread = fast_llm._compute.run
    engine.reset()
    on_engine_thread(engine.prepare, first)
    assert on_engine_thread(engine.prepare, second) >= len(first) - 1
    warm = engine.last_logits()
    engine.reset()
    assert on_engine_thread(engine.prepare, second) == 0
    cold = engine.last_logits()

    def log_softmax(x):
        x = x.astype(np.float64) - x.max()
        return x - np.log(np.exp(x).sum())

    warm, cold = log_softmax(warm), log_softmax(cold)
    top = np.argsort(-cold)[:10]
    assert warm.argmax() == cold.argmax()
    assert len(set(top) & set(np.argsort(-warm)[:10])) >= 8
    assert np.abs(warm[top] - cold[top]).max() < 0.5  # a stale or misplaced cache moves these by nats


def test_a_prefilled_prompt_is_not_evaluated_again(fast_llm, adapters) -> None:
    """A turn whose whole prompt was prefilled (the voice loop does it while the user pauses)
    samples from the logits the prefill left, and writes what a cold turn writes."""
    adapter = adapters["all_linear"]
    messages = [SYSTEM, ChatMessage(role="user", content="What do you bake on Sundays?")]
    fast_llm.reset_cache()
    cold = collect(fast_llm, GenerationRequest(messages=messages, params=greedy(12), adapter=adapter))
    assert fast_llm.last_stats.reused_tokens == 0
    fast_llm.reset_cache()
    assert collect(fast_llm, GenerationRequest(messages=messages, params=greedy(0), adapter=adapter)) == ""
    warm = collect(fast_llm, GenerationRequest(messages=messages, params=greedy(12), adapter=adapter))
    stats = fast_llm.last_stats
    assert stats.reused_tokens == stats.prompt_tokens  # nothing evaluated before the first token
    assert warm == cold
    # Logits left by anything else are never taken for the prompt's: a longer prompt sharing the
    # prefix evaluates its own tail, and after a generation the same prompt is evaluated again.
    collect(fast_llm, GenerationRequest(messages=messages, params=greedy(0), adapter=adapter))
    assert fast_llm.last_stats.reused_tokens == fast_llm.last_stats.prompt_tokens - 1


def test_generation_yields_the_cpu_to_speech_synthesis(fast_llm) -> None:
    """While the foreground is held (her speech being synthesised), decoding stops at its next
    token and goes on once it is free."""
    from companion.foreground import FOREGROUND

    story = [SYSTEM, ChatMessage(role="user", content="Tell me a very long story about your bakery.")]

    async def counts() -> tuple[int, int, int]:
        stream = fast_llm.stream(GenerationRequest(messages=story, params=greedy(400)))
        await stream.__anext__()
        stats = fast_llm.last_stats
        with FOREGROUND.hold():
            await asyncio.sleep(0.1)  # the token being computed when the hold came may still finish
            held = stats.generated_tokens
            await asyncio.sleep(0.5)
            still = stats.generated_tokens
        await asyncio.sleep(0.3)
        after = stats.generated_tokens
        await stream.aclose()
        return held, still, after

    held, still, after = asyncio.run(counts())
    assert still == held and after > still


def test_other_conversations_keep_their_cache(fast_llm) -> None:
    def turn(user: str) -> list[ChatMessage]:
        return [SYSTEM, ChatMessage(role="user", content=(user + " ") * 30)]

    alice, bob = turn("I am Alice and I like rye bread."), turn("I am Bob; tell me about croissants.")
    collect(fast_llm, GenerationRequest(messages=alice, params=greedy(4)))
    collect(fast_llm, GenerationRequest(messages=bob, params=greedy(4)))
    alice_again = [
        *alice,
        ChatMessage(role="assistant", content="Hello Alice."),
        ChatMessage(role="user", content="Hi"),
    ]
    collect(fast_llm, GenerationRequest(messages=alice_again, params=greedy(4)))
    assert fast_llm.last_stats.reused_tokens >= fast_llm.count_tokens(alice[1].content)


def test_a_conversation_comes_back_after_the_saved_caches_filled_up(fast_llm) -> None:
    # a bot with more users than the saved caches hold: the returning user's cache is the oldest
    # saved one, and saving the current conversation evicted it before it was restored (KeyError)
    engine = fast_llm.engine
    users = [[SYSTEM, ChatMessage(role="user", content=f"I am user {n}, baker number {n}. " * 12)] for n in range(6)]
    budget = engine.max_saved_bytes
    try:
        collect(fast_llm, GenerationRequest(messages=users[0], params=greedy(2)))
        collect(fast_llm, GenerationRequest(messages=users[1], params=greedy(2)))
        engine.max_saved_bytes = len(next(reversed(engine.saved.values()))) * 9 // 2  # room for four
        for messages in users[2:]:
            collect(fast_llm, GenerationRequest(messages=messages, params=greedy(2)))
        assert len(engine.saved) == 4
        oldest = list(next(iter(engine.saved))[1])
        back = next(m for m in users if oldest[: len(prompt := fast_llm.prompt_tokens(m)[0])] == prompt)
        collect(fast_llm, GenerationRequest(messages=back, params=greedy(2)))
        assert fast_llm.last_stats.reused_tokens >= fast_llm.count_tokens(back[1].content)
    finally:
        engine.max_saved_bytes = budget


def test_a_saved_cache_llama_cpp_refuses_is_evaluated_again(fast_llm) -> None:
    alice = [SYSTEM, ChatMessage(role="user", content="I am Alice and I like rye bread. " * 12)]
    bob = [SYSTEM, ChatMessage(role="user", content="I am Bob; tell me about croissants. " * 12)]
    cold = collect(fast_llm, GenerationRequest(messages=alice, params=greedy(6)))
    collect(fast_llm, GenerationRequest(messages=bob, params=greedy(2)))
    engine = fast_llm.engine
    key = next(k for k in engine.saved if list(k[1][: len(p := fast_llm.prompt_tokens(alice)[0])]) == p)
    engine.saved[key] = engine.saved[key][:16]  # damaged: llama.cpp will not load it
    assert collect(fast_llm, GenerationRequest(messages=alice, params=greedy(6))) == cold
    assert fast_llm.last_stats.reused_tokens < 32


def test_unsupported_adapter_falls_back_with_a_warning(fast_llm, local_llm, adapters, caplog) -> None:
    request = GenerationRequest(messages=PROBES[0], params=greedy(8, 1.1), adapter=adapters["dora"])
    with caplog.at_level(logging.WARNING, logger="companion.llm.llamacpp"):
        text = collect(fast_llm, request)
    assert any("DoRA" in r.getMessage() and "reference" in r.getMessage() for r in caplog.records)
    assert fast_llm.last_stats.path == "reference"
    assert text == collect(local_llm, request)


def test_context_overflow_trims_history(model_data_dir: Path, llama_cpp_available) -> None:
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings

    small = LlamaCppLLM(LlamaCppSettings(context_tokens=256), PluginContext(data_dir=model_data_dir))
    history = []
    for i in range(12):
        history += [
            ChatMessage(role="user", content=f"Question {i}: what did you bake on day {i}?"),
            ChatMessage(role="assistant", content=f"On day {i} I baked {i} loaves of milk bread."),
        ]
    messages = [SYSTEM, *history, ChatMessage(role="user", content="And today?")]
    text = collect(small, GenerationRequest(messages=messages, params=greedy(64)))
    stats = small.last_stats
    assert stats.trimmed_messages >= 10 and stats.prompt_tokens <= 256 - 64
    assert text
    # A single turn longer than the whole context still answers (its end is kept).
    huge = [ChatMessage(role="user", content="bread " * 600)]
    collect(small, GenerationRequest(messages=huge, params=greedy(8)))
    assert small.last_stats.prompt_tokens <= 256 - 8


def test_stop_strings_and_cancellation(fast_llm) -> None:
    full = collect(fast_llm, GenerationRequest(messages=PROBES[1], params=greedy(24, 1.1)))
    stop = full.strip().split()[1]
    cut = collect(fast_llm, GenerationRequest(messages=PROBES[1], params=greedy(24, 1.1, [stop])))
    assert stop not in cut and full.startswith(cut)

    async def first_piece_then_close() -> str:
        stream = fast_llm.stream(GenerationRequest(messages=PROBES[0], params=greedy(400)))
        piece = await stream.__anext__()
        await stream.aclose()
        return piece

    before = threading.active_count()
    assert asyncio.run(first_piece_then_close())
    assert threading.active_count() <= before
    assert fast_llm.last_stats.generated_tokens < 50
    assert collect(fast_llm, GenerationRequest(messages=PROBES[0], params=greedy(3)))


def test_every_computation_runs_on_one_thread(fast_llm, adapters) -> None:
    """Turns, scoring and loading all evaluate on the engine's one compute thread (each calling
    thread would get its own OpenMP team, and two teams on 2 cores cost a third of decode speed);
    the engine refuses to evaluate anywhere else."""
    engine = fast_llm.engine
    assert engine.owner == fast_llm._compute.run(threading.get_ident) != threading.get_ident()
    for probe in PROBES[:2]:
        assert collect(fast_llm, GenerationRequest(messages=probe, params=greedy(4), adapter=adapters["all_linear"]))
    assert fast_llm.token_logprobs(fast_llm.prompt_tokens(PROBES[0])[0][:20])
    with pytest.raises(RuntimeError, match="off its compute thread"):
        engine.advance(engine.cached[-1])  # straight from this thread
    fresh = type(fast_llm)(fast_llm.settings, fast_llm.context)
    fresh.load()  # loading calibrates: it evaluates too
    assert fresh.engine.owner == fresh._compute.run(threading.get_ident)
    assert collect(fresh, GenerationRequest(messages=PROBES[0], params=greedy(2)))


def test_scoring_asked_for_while_a_turn_waits_does_not_deadlock(fast_llm) -> None:
    """A turn queued on the compute thread and a score asked for from another thread both finish
    (the score once took the plugin's lock and then waited for the thread, where the queued turn
    waited for that lock)."""
    import concurrent.futures

    tokens = fast_llm.prompt_tokens(PROBES[0])[0][:20]
    busy = threading.Event()
    fast_llm._compute.submit(busy.wait, 60)  # the compute thread is busy: what comes next queues

    async def turn_and_score() -> tuple[str, list[float]]:
        stream = fast_llm.stream(GenerationRequest(messages=PROBES[1], params=greedy(8)))
        first = asyncio.ensure_future(stream.__anext__())  # the turn's job is queued
        await asyncio.sleep(0.2)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            scored = pool.submit(fast_llm.token_logprobs, tokens)  # asked for while the turn waits
            await asyncio.sleep(0.2)
            busy.set()
            text = await first + "".join([piece async for piece in stream])
            return text, await asyncio.wrap_future(scored)

    text, scores = asyncio.run(asyncio.wait_for(turn_and_score(), 120))
    assert text and len(scores) == len(tokens) - 1


def test_sampling_is_seeded(fast_llm) -> None:
    params = GenerationParams(max_new_tokens=12, temperature=0.9, seed=7)
    one = collect(fast_llm, GenerationRequest(messages=PROBES[0], params=params))
    assert one == collect(fast_llm, GenerationRequest(messages=PROBES[0], params=params))


def test_without_llama_cpp_everything_runs_on_the_reference(model_data_dir: Path, monkeypatch, caplog) -> None:
    import sys

    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings

    monkeypatch.setitem(sys.modules, "companion.llm.llamacpp_lib", None)  # import fails
    llm = LlamaCppLLM(LlamaCppSettings(), PluginContext(data_dir=model_data_dir))
    with caplog.at_level(logging.WARNING, logger="companion.llm.llamacpp"):
        assert not llm.fast
    assert "llama-cpp-python is not installed" in caplog.text
    assert llm.count_tokens("夏娜喜欢吃蜜瓜包") == 7


def test_a_looping_reply_ends_after_its_first_round(fast_llm, settings, tmp_path: Path) -> None:
    from companion.character import find_character
    from companion.history import HistoryStore
    from companion.repeats import looping_tail
    from companion.session import Companion

    # Mochi, asked to chant along without a repetition penalty, falls into a loop at once
    chant = "跟我一起念：红豆糖水，红豆糖水，红豆糖水，红豆糖水，红豆糖水，"
    params = greedy(120).model_copy(update={"repetition_penalty": 1.0})
    settings = settings.model_copy(update={"repetition_penalty": 1.0, "max_new_tokens": 120})
    mochi = find_character("mochi", settings.character_search_path)
    companion = Companion(character=mochi, settings=settings, llm=fast_llm, history=HistoryStore(tmp_path / "h.db"))
    key = companion.key(user="chanter")

    async def raw_and_guarded() -> tuple[str, list]:
        prompt, _ = await companion.build_prompt(key, chant, "User")
        request = GenerationRequest(messages=prompt.messages, params=params, adapter=mochi.adapter_dir)
        raw = "".join([piece async for piece in fast_llm.stream(request)])
        return raw, [event async for event in companion.turn(key, chant)]

    raw, events = asyncio.run(raw_and_guarded())
    assert looping_tail(raw[: len(raw) // 2]) is not None  # unguarded, it loops within half its tokens
    reply = events[-1].text
    assert reply and looping_tail(reply) is None and len(reply) < len(raw) // 2
    assert fast_llm.last_stats.generated_tokens < 60  # generation stopped, not just the text
    assert companion.history.load(key)[-1].content == reply
