"""Loading the base model for training or evaluation, attaching LoRA, and adapter metadata."""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from companion.errors import CompanionError, InputFileError
from companion.llm.embedded import EMBEDDED_MODELS, embedded_model_dir
from companion.llm.hardware import cpu_has_native_bf16, pick_device
from companion.llm.local import ADAPTER_INFO, check_adapter_matches
from training.lora.packing import register_attention

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


@dataclass
class Precision:
    """How weights are stored and matmuls computed."""

    weights: Any  # torch dtype of the frozen base
    autocast: Any  # torch dtype for autocast, or None
    name: str


def resolve_precision(requested: str, device: str) -> Precision:
    import torch

    if requested == "auto":
        if device.startswith("cuda"):
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            requested = "bf16" if cpu_has_native_bf16() else "fp32"
    if requested == "bf16":
        return Precision(torch.bfloat16, torch.bfloat16, "bf16")
    if requested == "fp16":
        if not device.startswith("cuda"):
            raise CompanionError("fp16 training needs a CUDA GPU; use precision bf16 or fp32 on a CPU")
        # fp16 weights with fp32 LoRA and autocast; without a GradScaler, bf16 is the safer choice.
        return Precision(torch.float16, torch.float16, "fp16")
    return Precision(torch.float32, None, "fp32")


def resolve_model_dir(model: str, data_dir: Path, on_status=None) -> tuple[str, str]:
    """(path or hub id to load, the name adapters record as their base)."""
    if model in EMBEDDED_MODELS:
        return str(embedded_model_dir(model, data_dir, on_convert=on_status)), model
    path = Path(model).expanduser()
    if path.exists():
        return str(path), str(path.resolve())
    return model, model


_tokenizers: dict[tuple[str, float], Any] = {}


def _load_tokenizer(source: str) -> Any:
    """Tokenizers are read-only here; Gemma's 262k-entry one takes seconds to parse, so keep it."""
    from transformers import AutoTokenizer

    path = Path(source) / "tokenizer.json"
    key = (source, path.stat().st_mtime if path.is_file() else 0.0)
    if key not in _tokenizers:
        _tokenizers[key] = AutoTokenizer.from_pretrained(source)
    return _tokenizers[key]


@dataclass
class LoadedBase:
    model: Any
    tokenizer: Any
    source: str
    base_name: str
    device: str
    precision: Precision


def load_base(
    model: str,
    data_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    quantization: str = "none",
    on_status=None,
) -> LoadedBase:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    device = pick_device(device)
    chosen = resolve_precision(precision, device)
    source, base_name = resolve_model_dir(model, data_dir, on_status)
    tokenizer = _load_tokenizer(source)
    if not tokenizer.chat_template:
        raise CompanionError(f"model {source} has no chat template: training must use the one inference uses")
    kwargs: dict[str, Any] = {"dtype": chosen.weights, "attn_implementation": register_attention()}
    if quantization == "4bit":
        if not device.startswith("cuda"):
            raise CompanionError("4-bit QLoRA needs a CUDA GPU (bitsandbytes); on a CPU train with quantization none")
        try:
            import bitsandbytes  # noqa: F401
            from transformers import BitsAndBytesConfig
        except ImportError:
            raise CompanionError("4-bit QLoRA needs bitsandbytes: pip install bitsandbytes") from None
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=chosen.weights,
        )
        kwargs["device_map"] = {"": torch.device(device)}
    loaded = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    if quantization != "4bit":
        loaded = loaded.to(device)
    return LoadedBase(loaded, tokenizer, source, base_name, device, chosen)


def attach_lora(base: LoadedBase, config: Any, *, gradient_checkpointing: bool = False) -> Any:
    """Wrap the base in a fresh LoRA (seeded by the caller); LoRA weights stay float32."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    model = base.model
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    targets = config.target_modules
    if targets == "all-linear":  # as LLaMA-Factory's `lora_target: all`: short names, so other tools read them
        targets = all_linear_names(model)
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft asks a deprecated transformers property
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            return get_peft_model(model, lora)
    except ValueError as error:
        raise CompanionError(f"LoRA targets {config.lora_targets!r} do not fit {base.source}: {error}") from None


def all_linear_names(model: Any) -> list[str]:
    """Every linear layer's short name except the output layer (q_proj, ..., down_proj)."""
    import torch

    output = model.get_output_embeddings()
    names = set()
    for name, module in model.named_modules():
        is_linear = isinstance(module, torch.nn.Linear) or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
        if is_linear and module is not output:
            names.add(name.rsplit(".", 1)[-1])
    return sorted(names)


def write_adapter_metadata(folder: Path, base: LoadedBase, **info: Any) -> None:
    """Record the base so the runtime refuses the adapter on another one: its name in peft's own
    `base_model_name_or_path` (vLLM and LLaMA-Factory read it too), its architecture and `info`
    in companion_adapter.json (peft warns about unknown keys in its config)."""
    patch_adapter_config(folder, {"base_model_name_or_path": base.base_name})
    record = {"base_architecture": getattr(base.model.config, "model_type", None), **info}
    (folder / ADAPTER_INFO).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def patch_adapter_config(folder: Path, updates: dict[str, Any]) -> None:
    path = folder / ADAPTER_CONFIG
    config = json.loads(path.read_text(encoding="utf-8"))
    config.update({k: v for k, v in updates.items() if v is not None})
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_adapter_config(folder: Path) -> dict[str, Any]:
    path = folder / ADAPTER_CONFIG
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(path, "missing: no adapter here (train one with `companion train`)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"corrupt adapter config ({error})") from None


def check_adapter_for(folder: Path, model: str, data_dir: Path) -> None:
    """Refuse an adapter made for another base before loading anything heavy."""
    from transformers import AutoConfig

    source, _ = resolve_model_dir(model, data_dir)
    check_adapter_matches(folder / ADAPTER_CONFIG, model, AutoConfig.from_pretrained(source))


def load_adapter(base: LoadedBase, folder: Path, *, model_name: str) -> Any:
    """The base with the adapter in `folder` attached (refused when made for another base)."""
    from peft import PeftModel

    check_adapter_matches(folder / ADAPTER_CONFIG, model_name, base.model.config)
    try:
        model = PeftModel.from_pretrained(base.model, str(folder))
    except (RuntimeError, ValueError, OSError, KeyError) as error:
        raise InputFileError(folder / ADAPTER_WEIGHTS, f"adapter does not load onto {model_name}: {error}") from None
    model.eval()
    return model
