"""The peft -> llama.cpp LoRA GGUF converter, checked tensor by tensor (no llama.cpp needed)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from companion.llm.lora_gguf import (
    BaseModelInfo,
    UnsupportedAdapter,
    adapter_digest,
    convert_adapter,
    plan_conversion,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def base(embedded_gguf: Path) -> BaseModelInfo:
    return BaseModelInfo.from_gguf(embedded_gguf)


def peft_delta(adapter: Path, module: str) -> np.ndarray:
    """The weight update peft applies to `module`: scaling * B @ A."""
    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    a = tensors[f"base_model.model.{module}.lora_A.weight"].astype(np.float64)
    b = tensors[f"base_model.model.{module}.lora_B.weight"].astype(np.float64)
    rank = a.shape[0]
    short = module.rsplit(".", 1)[-1]
    alpha = config.get("alpha_pattern", {}).get(short, config["lora_alpha"])
    scaling = alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)
    return scaling * b @ a


def gguf_delta(path: Path, name: str) -> np.ndarray:
    """The update llama.cpp applies to `name`: alpha / rank * lora_b @ lora_a (llama-adapter.h)."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    tensors = {t.name: np.array(t.data, dtype=np.float64) for t in reader.tensors}
    alpha = float(reader.fields["adapter.lora.alpha"].contents())
    a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["general.architecture"].contents() == "gemma3"
    return alpha / b.shape[1] * b @ a


@pytest.mark.parametrize("kind", ["qv", "all_linear", "rslora"])
def test_converted_update_equals_peft_update(adapters, base, kind: str, tmp_path: Path) -> None:
    out = convert_adapter(adapters[kind], base, tmp_path / "a.gguf")
    pairs = {
        "model.layers.0.self_attn.q_proj": "blk.0.attn_q.weight",
        "model.layers.17.self_attn.v_proj": "blk.17.attn_v.weight",
    }
    if kind == "all_linear":
        pairs |= {
            "model.layers.5.self_attn.k_proj": "blk.5.attn_k.weight",
            "model.layers.5.self_attn.o_proj": "blk.5.attn_output.weight",
            "model.layers.9.mlp.gate_proj": "blk.9.ffn_gate.weight",
            "model.layers.9.mlp.up_proj": "blk.9.ffn_up.weight",
            "model.layers.9.mlp.down_proj": "blk.9.ffn_down.weight",
        }
    for module, name in pairs.items():
        expected = peft_delta(adapters[kind], module)
        np.testing.assert_allclose(gguf_delta(out, name), expected, rtol=1e-5, atol=1e-7 * np.abs(expected).max())
    n_modules = {"qv": 2 * 18, "all_linear": 7 * 18, "rslora": 3 * 18}[kind]
    from gguf import GGUFReader

    assert len(GGUFReader(out).tensors) == 2 * n_modules


def test_unsupported_adapters_say_why(adapters, base, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedAdapter, match="DoRA"):
        convert_adapter(adapters["dora"], base, tmp_path / "dora.gguf")
    assert not (tmp_path / "dora.gguf").exists()

    config = json.loads((adapters["qv"] / "adapter_config.json").read_text())
    tensors = load_file(adapters["qv"] / "adapter_model.safetensors")
    with pytest.raises(UnsupportedAdapter, match="modules_to_save"):
        plan_conversion({**config, "modules_to_save": ["lm_head"]}, tensors, base)
    with pytest.raises(UnsupportedAdapter, match="token embedding"):
        plan_conversion(
            config,
            {**tensors, "base_model.model.model.embed_tokens.lora_embedding_A": tensors[next(iter(tensors))]},
            base,
        )
    a = np.zeros((4, 640), np.float32)
    b = np.zeros((640, 4), np.float32)
    odd = {
        "base_model.model.model.layers.0.mlp.act_fn.lora_A.weight": a,
        "base_model.model.model.layers.0.mlp.act_fn.lora_B.weight": b,
    }
    with pytest.raises(UnsupportedAdapter, match=r"no llama\.cpp"):
        plan_conversion(config, odd, base)
    # An adapter made for a wider model (another base) does not fit the GGUF's tensors.
    wide = {k: np.zeros((v.shape[0], 1152), np.float32) if "lora_A" in k else v for k, v in tensors.items()}
    with pytest.raises(UnsupportedAdapter, match=r"maps 1152 -> \d+ features where blk"):
        plan_conversion(config, wide, base)


def test_digest_follows_content(adapters, tmp_path: Path) -> None:
    copy = shutil.copytree(adapters["qv"], tmp_path / "copy")
    assert adapter_digest(copy) == adapter_digest(adapters["qv"])
    tensors = load_file(copy / "adapter_model.safetensors")
    first = next(iter(tensors))
    tensors[first] = tensors[first] * 2
    save_file(tensors, copy / "adapter_model.safetensors")
    assert adapter_digest(copy) != adapter_digest(adapters["qv"])
