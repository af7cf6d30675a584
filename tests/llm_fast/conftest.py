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


@pytest.fixture(scope="session")
def embedded_gguf(model_data_dir: Path) -> Path:
    from companion.llm.embedded import EMBEDDED_MODELS

    scratch = model_data_dir / "models" / "gguf"
    scratch.mkdir(parents=True, exist_ok=True)
    return EMBEDDED_MODELS["gemma3-270m"].locate_gguf(scratch)


@pytest.fixture(scope="session")
def exact_model_dir(local_llm, embedded_gguf: Path) -> Path:
    """The embedded GGUF dequantized into a float32 transformers folder (the app's folder rounds
    the weights to bfloat16). Made once (a minute or two), cached beside the app's folder."""
    from companion.llm.embedded import GEMMA_CHAT_TEMPLATE, convert_gguf

    target = local_llm.model_dir.with_name(local_llm.model_dir.name + "-float32")
    if not (target / "config.json").is_file():
        convert_gguf(embedded_gguf, target, chat_template=GEMMA_CHAT_TEMPLATE, dtype="float32")
    return target


@pytest.fixture(scope="session")
def f32_gguf(embedded_gguf: Path, llama_cpp_available) -> Path:
    """The same weights as a float32 GGUF, written by llama.cpp's own dequantizer (once, ~20 s,
    1 GB): llama.cpp then runs plain float32 matmuls instead of quantizing activations to 8 bits."""
    import ctypes

    import llama_cpp.llama_cpp as llama

    import companion.llm.llamacpp_lib  # noqa: F401  (routes llama.cpp's log through ours)

    target = embedded_gguf.with_name(embedded_gguf.stem + ".F32.gguf")
    if not target.is_file():
        staging = target.with_name(f".{target.name}.tmp")
        params = llama.llama_model_quantize_default_params()
        params.ftype = llama.LLAMA_FTYPE_ALL_F32
        params.allow_requantize = True
        assert llama.llama_model_quantize(str(embedded_gguf).encode(), str(staging).encode(), ctypes.byref(params)) == 0
        staging.replace(target)
    return target


@pytest.fixture(scope="session")
def exact_fast(f32_gguf: Path, model_data_dir: Path):
    """The fast backend (all of it: prompt, tokens, converted adapters, KV cache) on the float32 GGUF."""
    from companion.llm.embedded import GEMMA_CHAT_TEMPLATE
    from companion.llm.llamacpp import LlamaCppLLM, LlamaCppSettings
    from companion.plugins import PluginContext

    settings = LlamaCppSettings(model=str(f32_gguf), chat_template=GEMMA_CHAT_TEMPLATE)
    llm = LlamaCppLLM(settings, PluginContext(data_dir=model_data_dir))
    assert llm.fast
    return llm


@pytest.fixture(scope="session")
def exact_adapters(adapters: dict[str, Path], f32_gguf: Path, tmp_path_factory) -> dict[str, Path]:
    """The test adapters, recorded as made for the float32 GGUF (an adapter that names the embedded
    model is refused on any other model file)."""
    import shutil

    root = tmp_path_factory.mktemp("exact_adapters")
    out = {}
    for kind, folder in adapters.items():
        copy = Path(shutil.copytree(folder, root / kind))
        config = json.loads((copy / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(f32_gguf)
        (copy / "adapter_config.json").write_text(json.dumps(config))
        out[kind] = copy
    return out
