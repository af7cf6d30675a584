"""Adapter tools: merge an adapter into its base, and lay adapters out for vLLM.

Merging gives a plain transformers folder (safetensors + tokenizer with the chat template)
that any runtime loads without peft, e.g. `companion chat --model <folder>` or llama.cpp's
converter. The vLLM layout serves many characters from one base: one folder per character
with the PEFT files, plus the `vllm serve` command and the companion config that points each
character at its module through the `openai` plugin.
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from companion import atomic
from companion.character import Character
from companion.errors import CompanionError, InputFileError
from companion.llm.embedded import EMBEDDED_MODELS
from training.lora.model import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    load_adapter,
    load_base,
    read_adapter_config,
    resolve_model_dir,
)

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def base_model_of(adapter_dir: Path) -> str:
    config = read_adapter_config(adapter_dir)
    name = str(config.get("base_model_name_or_path") or "")
    if not name:
        raise InputFileError(adapter_dir / ADAPTER_CONFIG, "no base_model_name_or_path: cannot tell its base model")
    return name


def merge_adapter(
    adapter_dir: Path, out: Path, data_dir: Path, *, dtype: str = "bf16", replace: bool = False, verify: bool = True
) -> dict[str, Any]:
    """Write base + adapter as one model folder. Returns what was done (and the check's result)."""
    import torch

    if out.exists() and not replace:
        raise CompanionError(f"{out} already exists: choose another --out or pass --replace")
    model_name = base_model_of(adapter_dir)
    base = load_base(model_name, data_dir, device="cpu", precision="fp32")  # merge in full precision
    model = load_adapter(base, adapter_dir, model_name=model_name)
    probe = base.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello! 你好！"}], tokenize=True, add_generation_prompt=True, return_dict=False
    )
    ids = torch.tensor([probe])
    with torch.inference_mode():
        expected = model(input_ids=ids).logits.float() if verify else None
        merged = model.merge_and_unload()
        difference = float((merged(input_ids=ids).logits.float() - expected).abs().max()) if verify else None
    merged = merged.to(getattr(torch, {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[dtype]))
    merged.config._attn_implementation = "sdpa"  # our packed attention is a training-time registration
    with atomic.staged_dir(out, replace=replace) as staging:
        merged.save_pretrained(str(staging), safe_serialization=True)
        base.tokenizer.save_pretrained(str(staging))
        info = {"merged_adapter": str(adapter_dir.resolve()), "base_model": model_name, "dtype": dtype}
        (staging / "companion_source.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return {**info, "out": str(out), "max_logit_difference": difference}


def vllm_layout(
    characters: Sequence[Character], out: Path, data_dir: Path, *, base_model: str | None = None, port: int = 8000
) -> dict[str, Any]:
    """One folder per character's adapter under `out`, plus serve.sh and companion.toml."""
    if not characters:
        raise CompanionError("name at least one character")
    modules: dict[str, Path] = {}
    ranks, bases = [], set()
    for character in characters:
        adapter = character.adapter_dir
        config = read_adapter_config(adapter)
        if not (adapter / ADAPTER_WEIGHTS).is_file():
            raise InputFileError(adapter / ADAPTER_WEIGHTS, "missing: vLLM needs adapter_model.safetensors")
        if config.get("peft_type") != "LORA" or config.get("use_dora"):
            raise InputFileError(adapter / ADAPTER_CONFIG, "vLLM serves plain LoRA adapters only (no DoRA or others)")
        if config.get("modules_to_save"):
            raise InputFileError(adapter / ADAPTER_CONFIG, "vLLM cannot serve adapters with modules_to_save")
        ranks.append(int(config.get("r", 8)))
        bases.add(str(config.get("base_model_name_or_path")))
        modules[character.id] = adapter
    if len(bases) > 1:
        raise CompanionError(
            f"these adapters were trained on different bases ({', '.join(sorted(bases))}): "
            "one vLLM server serves one base"
        )
    recorded = bases.pop()
    served = base_model or (resolve_model_dir(recorded, data_dir)[0] if recorded in EMBEDDED_MODELS else recorded)
    out.mkdir(parents=True, exist_ok=True)
    for name, adapter in modules.items():
        with atomic.staged_dir(out / name, replace=True) as staging:
            config = read_adapter_config(adapter)
            config["base_model_name_or_path"] = served
            (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
            shutil.copy2(adapter / ADAPTER_WEIGHTS, staging / ADAPTER_WEIGHTS)
    max_rank = next(r for r in VLLM_RANKS if r >= max(ranks))
    module_args = " ".join(shlex.quote(f"{n}={(out / n).resolve()}") for n in modules)
    serve = (
        "#!/bin/sh\n# One base model, every character's LoRA as a module (written by companion adapter vllm-layout).\n"
        f"exec vllm serve {shlex.quote(served)} --port {port} --enable-lora --max-lora-rank {max_rank} "
        f'--max-loras {len(modules)} --lora-modules {module_args} "$@"\n'
    )
    atomic.write_text(out / "serve.sh", serve)
    (out / "serve.sh").chmod(0o755)
    toml = [
        "# Point each character at its LoRA module: put the [llm] table in the character's config,",
        "# or give her card `extensions.companion.llm: {plugin: openai, model: <id>}`.",
        "",
    ]
    for name in modules:
        toml += [
            f"# {name}",
            "[llm]",
            'plugin = "openai"',
            f'base_url = "http://localhost:{port}/v1"',
            f'model = "{name}"',
            "",
        ]
    atomic.write_text(out / "companion.toml", "\n".join(toml))
    return {
        "out": str(out),
        "base_model": served,
        "modules": {n: str(out / n) for n in modules},
        "max_lora_rank": max_rank,
    }
