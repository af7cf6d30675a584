"""Convert a peft LoRA adapter (adapter_config.json + adapter_model.safetensors) to llama.cpp's
LoRA GGUF, so the fast backend applies the character's adapter on top of the quantized base.

What llama.cpp expects (src/llama-adapter.cpp):
- metadata `general.type = "adapter"`, `adapter.type = "lora"`, `general.architecture` equal to
  the base model's, and `adapter.lora.alpha`; at run time each pair is scaled by alpha / rank,
  the rank read from the tensor (lora_b's first ggml dimension);
- per adapted weight `W` (named as in the base GGUF, e.g. `blk.3.attn_q.weight`) two tensors
  `<name>.lora_a` with ggml shape [n_in, r] and `<name>.lora_b` with ggml shape [r, n_out].
  ggml lists dimensions fastest-first, so these are exactly peft's row-major `lora_A.weight`
  (r, n_in) and `lora_B.weight` (n_out, r), written as they are.

peft's scaling is alpha/r per module (alpha/sqrt(r) with rsLoRA, per-module values with
rank_pattern/alpha_pattern). We write the config's `lora_alpha` and fold any difference between
peft's scale and llama.cpp's alpha/rank into lora_b, so every variant gives the same product.

Names go through gguf's own TensorNameMap (the table convert_hf_to_gguf uses). For llama-family
models llama.cpp stores q/k projections with rows permuted for its RoPE layout
(convert_hf_to_gguf's `LlamaModel.permute`); a LoRA's output side (lora_b) gets the same
permutation, its input side (lora_a) does not. Gemma 3 needs no permutation.

Anything we cannot express (DoRA, biases, trained embeddings or heads, unknown modules, shapes
that do not fit the base) raises UnsupportedAdapter with the reason; the caller falls back to
the transformers + peft reference path.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONVERTER_VERSION = 1
_PERMUTED_ARCHS = {"llama"}  # archs whose q/k rows convert_hf_to_gguf permutes for RoPE
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>A|B)(?:\.(?P<adapter>[^.]+))?\.weight$")
# peft LoRA variants whose forward pass is not y = Wx + s*B(Ax): no llama.cpp equivalent.
_UNSUPPORTED_OPTIONS = (
    "layer_replication",
    "trainable_token_indices",
    "target_parameters",
    "alora_invocation_tokens",
    "arrow_config",
    "monteclora_config",
    "velora_config",
    "use_qalora",
    "use_bdlora",
)
_EXTRA_PREFIXES = ("model.language_model.", "language_model.model.")


class UnsupportedAdapter(Exception):
    """The adapter is a valid peft adapter that llama.cpp cannot run as a LoRA GGUF."""


@dataclass(frozen=True)
class BaseModelInfo:
    """What the converter needs from the base GGUF: its architecture and tensor shapes."""

    arch: str
    n_blocks: int
    n_head: int
    n_head_kv: int
    shapes: dict[str, tuple[int, ...]]
    """ggml shapes (fastest dimension first) of the base tensors, by GGUF name."""

    @classmethod
    def from_gguf(cls, path: Path) -> BaseModelInfo:
        fields, shapes = read_gguf_header(path)
        arch = str(fields.get("general.architecture"))

        def first(value: Any, default: int) -> int:
            value = default if value is None else value
            return int(value[0] if isinstance(value, list) else value)

        n_head = first(fields.get(f"{arch}.attention.head_count"), 0)
        return cls(
            arch=arch,
            n_blocks=first(fields.get(f"{arch}.block_count"), 0),
            n_head=n_head,
            n_head_kv=first(fields.get(f"{arch}.attention.head_count_kv"), n_head),
            shapes=shapes,
        )


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


def read_gguf_header(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]]]:
    """Metadata (arrays of numbers kept, arrays of strings skipped) and tensor shapes of a GGUF,
    read straight from its header: gguf's GGUFReader also parses the 262k-entry vocabulary,
    which takes half a minute on this machine; this takes milliseconds."""
    import mmap
    import struct

    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        offset = 8
        n_tensors, n_kv = struct.unpack_from("<QQ", data, offset)
        offset += 16

        def string() -> str:
            nonlocal offset
            (size,) = struct.unpack_from("<Q", data, offset)
            offset += 8 + size
            return bytes(data[offset - size : offset]).decode("utf-8", errors="replace")

        def value(kind: int) -> Any:
            nonlocal offset
            if kind == 8:
                return string()
            if kind == 9:
                (item, count) = struct.unpack_from("<IQ", data, offset)
                offset += 12
                if item in _SCALARS:
                    fmt = _SCALARS[item]
                    size = struct.calcsize(fmt)
                    items = [struct.unpack_from(fmt, data, offset + i * size)[0] for i in range(min(count, 64))]
                    offset += count * size
                    return items if count <= 64 else None
                for _ in range(count):
                    value(item)
                return None
            fmt = _SCALARS[kind]
            (found,) = struct.unpack_from(fmt, data, offset)
            offset += struct.calcsize(fmt)
            return found

        fields: dict[str, Any] = {}
        for _ in range(n_kv):
            key = string()
            (kind,) = struct.unpack_from("<I", data, offset)
            offset += 4
            fields[key] = value(kind)
        shapes: dict[str, tuple[int, ...]] = {}
        for _ in range(n_tensors):
            name = string()
            (n_dims,) = struct.unpack_from("<I", data, offset)
            offset += 4
            shapes[name] = struct.unpack_from(f"<{n_dims}Q", data, offset)
            offset += 8 * n_dims + 4 + 8  # dims, ggml type, data offset
    return fields, shapes


def adapter_digest(adapter_dir: Path) -> str:
    """Content hash of an adapter folder's config and weights (the conversion cache key)."""
    digest = hashlib.sha256(f"v{CONVERTER_VERSION}".encode())
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        with (adapter_dir / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    return json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's rank_pattern/alpha_pattern lookup: a key matches the module name's tail."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module) or module.endswith(f".{key}") or module == key:
            return value
    return default


def _hf_module_name(module: str) -> str:
    for prefix in _EXTRA_PREFIXES:
        if module.startswith(prefix):
            return "model." + module[len(prefix) :]
    return module


def _permute_rows(rows: Any, n_head: int) -> Any:
    """convert_hf_to_gguf's LlamaModel.permute, on the output (row) axis only."""
    return rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def plan_conversion(config: dict[str, Any], tensors: dict[str, Any], base: BaseModelInfo) -> tuple[float, list]:
    """Check the adapter against the base and return (alpha, [(gguf_name, lora_a, lora_b)]) as float32
    numpy arrays; raises UnsupportedAdapter saying why it cannot run on llama.cpp."""
    import gguf
    import numpy as np

    peft_type = str(config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise UnsupportedAdapter(f"it is a {peft_type} adapter; llama.cpp runs plain LoRA only")
    if config.get("use_dora"):
        raise UnsupportedAdapter("it uses DoRA (use_dora), which llama.cpp adapters cannot express")
    if config.get("lora_bias"):
        raise UnsupportedAdapter("it trains LoRA biases (lora_bias), which llama.cpp adapters cannot express")
    for option in _UNSUPPORTED_OPTIONS:
        if config.get(option):
            raise UnsupportedAdapter(f"it uses {option}={config[option]!r}, which llama.cpp adapters cannot express")
    if config.get("modules_to_save"):
        raise UnsupportedAdapter(f"it fully retrains {config['modules_to_save']} (modules_to_save)")
    archs = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if base.arch not in archs:
        raise UnsupportedAdapter(f"the gguf package does not know the base architecture {base.arch!r}")
    name_map = gguf.get_tensor_name_map(archs[base.arch], base.n_blocks)

    r_default = int(config.get("r", 8))
    alpha_default = float(config.get("lora_alpha", r_default))
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))

    pairs: dict[str, dict[str, Any]] = {}
    for key, value in tensors.items():
        match = _KEY.match(key)
        if match is None:
            what = "a DoRA magnitude" if "lora_magnitude_vector" in key else "a tensor llama.cpp cannot load"
            if "lora_embedding_" in key:
                what = "a LoRA on the token embedding"
            raise UnsupportedAdapter(f"{key} is {what}")
        pairs.setdefault(match["module"], {})[match["part"]] = value

    planned = []
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"A", "B"}:
            raise UnsupportedAdapter(f"{module} has lora_{next(iter(parts))} without its partner")
        hf_name = _hf_module_name(module)
        gguf_name = name_map.get_name(hf_name + ".weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise UnsupportedAdapter(f"it targets {hf_name}, which has no llama.cpp ({base.arch}) counterpart")
        if gguf_name not in base.shapes:
            where = "the output head, tied to the embedding in this base" if gguf_name == "output.weight" else gguf_name
            raise UnsupportedAdapter(f"it targets {hf_name} ({where}), which the base GGUF does not have")
        if gguf_name == "token_embd.weight":
            raise UnsupportedAdapter(f"it targets the token embedding ({hf_name})")
        a = np.asarray(parts["A"], dtype=np.float32)
        b = np.asarray(parts["B"], dtype=np.float32)
        n_in, n_out = base.shapes[gguf_name][:2]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise UnsupportedAdapter(f"{module} has lora_A {a.shape} and lora_B {b.shape}, which do not pair")
        if a.shape[1] != n_in or b.shape[0] != n_out:
            raise UnsupportedAdapter(
                f"{module} maps {a.shape[1]} -> {b.shape[0]} features where {gguf_name} maps {n_in} -> {n_out}"
            )
        rank = a.shape[0]
        r_module = int(_pattern_value(rank_pattern, module, r_default))
        alpha_module = float(_pattern_value(alpha_pattern, module, alpha_default))
        if r_module != rank:
            r_module = rank  # peft saves the true rank in the tensor; trust it over the config
        peft_scale = alpha_module / (math.sqrt(r_module) if rslora else r_module)
        llama_scale = alpha_default / rank if alpha_default else 1.0
        if not math.isclose(peft_scale, llama_scale, rel_tol=1e-6):
            b = b * np.float32(peft_scale / llama_scale)
        if base.arch in _PERMUTED_ARCHS and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
            heads = base.n_head if gguf_name.endswith("attn_q.weight") else base.n_head_kv
            b = _permute_rows(b, heads)
        planned.append((gguf_name, np.ascontiguousarray(a), np.ascontiguousarray(b)))
    if not planned:
        raise UnsupportedAdapter("it has no LoRA weights")
    return alpha_default, planned


def convert_adapter(adapter_dir: Path, base: BaseModelInfo, target: Path) -> Path:
    """Write the llama.cpp LoRA GGUF for this peft adapter (atomically) and return its path."""
    import gguf
    from safetensors.numpy import load_file

    config = read_adapter_config(adapter_dir)
    tensors = _load_float_tensors(adapter_dir / "adapter_model.safetensors", load_file)
    alpha, planned = plan_conversion(config, tensors, base)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        writer = gguf.GGUFWriter(str(staging), base.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_string("companion.source_adapter", str(config.get("base_model_name_or_path") or ""))
        for name, a, b in planned:
            writer.add_tensor(f"{name}.lora_a", a)
            writer.add_tensor(f"{name}.lora_b", b)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return target


def _load_float_tensors(path: Path, load_file: Any) -> dict[str, Any]:
    """safetensors -> numpy; bf16 (which numpy lacks) goes through torch."""
    try:
        return load_file(str(path))
    except (TypeError, ValueError):
        from safetensors.torch import load_file as load_torch

        return {k: v.float().numpy() for k, v in load_torch(str(path)).items()}
