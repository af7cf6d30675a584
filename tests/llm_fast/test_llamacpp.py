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
    engine.prepare(tokens)
    out = []
    with engine.sampler(greedy(n, penalty), tokens) as sample:
        for _ in range(n):
            token = sample()
            out.append(token)
            engine.advance(token)
    return out


@pytest.fixture(scope="module")
def reference_fp32(local_llm, adapters):
    """transformers + peft in float32 on the dequantized GGUF weights: one base model, the adapters
    attached by name; `get(kind)` selects one (None: the bare base)."""
    import contextlib

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(local_llm.model_dir, dtype=torch.float32)
    kinds = ["qv", "all_linear", "rslora"]
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
    for messages in PROBES:
        request = GenerationRequest(messages=messages)
        assert fast_llm.prompt_tokens(messages)[0] == local_llm.prompt_ids(request)[0].tolist()


@pytest.mark.parametrize("kind", [None, "qv", "all_linear", "rslora"])
def test_greedy_output_matches_the_reference(fast_llm, local_llm, reference_fp32, adapters, kind) -> None:
    """Same first tokens as transformers + peft (float32, the dequantized weights of the same GGUF)
    on every probe, all 12 on nearly all; llama.cpp runs the quantized weights with 8-bit activations
    and an f16 KV cache, so a late token may part at a near tie. Measured here: base 12,12,12,12,12,4;
    q/v 12,12,12,10,12,12; all-linear 12 x6; rsLoRA 12,12,12,9,12,12."""
    n = 12
    model = reference_fp32(kind)
    adapter = adapters[kind] if kind else None
    agreeing = []
    for messages in PROBES:
        prompt = local_llm.prompt_ids(GenerationRequest(messages=messages))
        expected = reference_greedy_ids(model, prompt, n)
        got = fast_greedy_ids(fast_llm, messages, n, adapter)
        same = next((i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b), n)
        agreeing.append(same)
    print(f"greedy agreement ({kind}): {agreeing} of {n}")
    assert min(agreeing) >= 4 and sum(a == n for a in agreeing) >= len(PROBES) - 2, agreeing


def test_adapter_changes_output_and_switches_off(fast_llm, adapters) -> None:
    messages = PROBES[0]
    base = fast_llm.token_logprobs(fast_llm.prompt_tokens(messages)[0])
    adapted = fast_llm.token_logprobs(fast_llm.prompt_tokens(messages)[0], adapters["qv"])
    assert max(abs(a - b) for a, b in zip(base, adapted, strict=True)) > 0.05
    text = collect(fast_llm, GenerationRequest(messages=messages, params=greedy(10)))
    collect(fast_llm, GenerationRequest(messages=messages, params=greedy(10), adapter=adapters["qv"]))
    assert collect(fast_llm, GenerationRequest(messages=messages, params=greedy(10))) == text


@pytest.mark.parametrize("kind", [None, "all_linear"])
def test_held_out_perplexity_close_to_the_reference(fast_llm, local_llm, reference_fp32, adapters, kind) -> None:
    """Held-out perplexity against the same float32 reference. Not within 1%: llama.cpp quantizes
    activations to 8 bits for its quantized dot products (and keeps K/V in f16), which costs
    Gemma-3-270M 0.2-3.2% perplexity on 700-token lore texts and 2.5% on this one (1.4% with f32 K/V
    and no flash attention); the equivalence criterion we meet is the greedy one above. This bound
    catches a wrong adapter or template, which cost far more (a LoRA at the wrong scale: +50%)."""
    import torch

    ids = local_llm.tokenizer("<bos>" + HELD_OUT, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        logits = reference_fp32(kind)(ids).logits[0, :-1].double()
    expected = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
    reference_ppl = math.exp(-expected.mean().item())
    got = fast_llm.token_logprobs(ids[0].tolist(), adapters[kind] if kind else None)
    fast_ppl = math.exp(-sum(got) / len(got))
    assert len(got) == ids.shape[1] - 1 > 100
    assert abs(fast_ppl / reference_ppl - 1) < 0.04, (fast_ppl, reference_ppl)


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
    engine.reset()
    engine.prepare(first)
    assert engine.prepare(second) >= len(first) - 1
    warm = engine.last_logits()
    engine.reset()
    assert engine.prepare(second) == 0
    cold = engine.last_logits()

    def log_softmax(x):
        x = x.astype(np.float64) - x.max()
        return x - np.log(np.exp(x).sum())

    warm, cold = log_softmax(warm), log_softmax(cold)
    top = np.argsort(-cold)[:10]
    assert warm.argmax() == cold.argmax()
    assert len(set(top) & set(np.argsort(-warm)[:10])) >= 8
    assert np.abs(warm[top] - cold[top]).max() < 0.5  # a stale or misplaced cache moves these by nats


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
