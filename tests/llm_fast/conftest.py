"""Fixtures for the fast (llama.cpp) backend: the engine and peft adapters, made once per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def make_adapter(base, folder: Path, *, scale_b: float = 1.0, base_name: str = "gemma3-270m", **lora: object) -> Path:
    """A real peft adapter for the embedded base (random, not zero-initialised, so it changes the
    output), saved the way peft and LLaMA-Factory save it. `scale_b` shrinks lora_B: unscaled, peft's
    random init changes each weight by ~66% of its norm (a broken model whose near-tied logits say
    nothing about equivalence); scaled, by ~5%, the order of a fine-tuned adapter's update.
    `base_name` is the embedded model it records as its base; `base` is left as it was."""
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1234)
    peft_model = get_peft_model(base, LoraConfig(init_lora_weights=False, **lora))
    if scale_b != 1.0:
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.mul_(scale_b)
    peft_model.save_pretrained(folder)
    peft_model.unload()  # takes the LoRA layers out again
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="session")
def llama_cpp_available() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'companion[fast]')")


@pytest.fixture(scope="session")
def fast_llm(model_data_dir: Path, llama_cpp_available):
    """The fast backend on the embedded Gemma-3-270M Q4_K_M GGUF, loaded once."""
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings
    from companion.plugins import PluginContext

    llm = LlamaCppLLM(LlamaCppSettings(model="gemma3-270m"), PluginContext(data_dir=model_data_dir))
    llm.load()
    assert llm.fast
    return llm


@pytest.fixture(scope="session")
def adapters(local_llm, tmp_path_factory) -> dict[str, Path]:
    """q/v r=4 (what tests/test_llm.py uses), all-linear r=8 alpha 16 (LLaMA-Factory's default
    targets, what our trainer produces), rsLoRA with a rank pattern, and DoRA (unsupported)."""
    import torch
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    base = AutoModelForCausalLM.from_pretrained(local_llm.model_dir, dtype=torch.float32)
    return {
        "qv": make_adapter(base, root / "qv", scale_b=0.075, r=4, target_modules=["q_proj", "v_proj"]),
        "all_linear": make_adapter(
            base, root / "all_linear", scale_b=0.075, r=8, lora_alpha=16, target_modules="all-linear"
        ),
        "rslora": make_adapter(
            base,
            root / "rslora",
            scale_b=0.03,
            r=8,
            lora_alpha=16,
            use_rslora=True,
            rank_pattern={"v_proj": 4},
            target_modules=["q_proj", "v_proj", "o_proj"],
        ),
        "dora": make_adapter(base, root / "dora", r=4, use_dora=True, target_modules=["q_proj", "v_proj"]),
    }
