"""The few llama.cpp C calls the fast backend makes, through llama-cpp-python's ctypes bindings
(`llama_cpp.llama_cpp`, pinned in pyproject: the C API moves between releases).

Importing this module raises ImportError when llama-cpp-python is missing; the plugin then runs
on the reference path.
"""

from __future__ import annotations

import ctypes
import logging
import random
from datetime import datetime
from pathlib import Path
from typing import Any

import llama_cpp.llama_cpp as llama
import numpy as np

from companion.errors import CompanionError, InputFileError
from companion.llm.end_aliases import merge_into_end

log = logging.getLogger("companion.llm.llamacpp")
_LEVELS = {3: logging.WARNING, 4: logging.ERROR}  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error
# Warnings that say nothing is wrong: a LoRA on a repacked weight keeps its own tensors in plain
# CPU memory (one line per adapted weight, on every adapter load); the shipped Gemma GGUF types
# '</s>' as a normal token and llama.cpp corrects it; the full-size sliding-window cache is what
# prefix reuse across turns needs.
_NOT_WORTH_A_WARNING = (
    "cannot use buft 'CPU_REPACK', fallback to CPU",
    "was not control-type; this is probably a bug in the model",
    "using full-size SWA cache",
)
_last_level = [0]


@llama.llama_log_callback
def _log_callback(level: int, text: bytes, _user: Any) -> None:
    # llama.cpp logs every tensor at load; keep warnings and errors (level 5 continues the last line)
    level = _last_level[0] if level == 5 else level
    _last_level[0] = level
    if level in _LEVELS and text:
        message = text.decode("utf-8", errors="replace").rstrip()
        if message:
            quiet = any(part in message for part in _NOT_WORTH_A_WARNING)
            log.log(logging.DEBUG if quiet else _LEVELS[level], "llama.cpp: %s", message)


llama.llama_log_set(_log_callback, ctypes.c_void_p(0))
_backend_ready = False


def load(path: Path, *, n_ctx: int, n_batch: int, threads: int, batch_threads: int) -> tuple[Any, Any]:
    global _backend_ready
    if not _backend_ready:
        llama.llama_backend_init()
        _backend_ready = True
    model_params = llama.llama_model_default_params()
    model_params.n_gpu_layers = 0
    model = llama.llama_model_load_from_file(str(path).encode(), model_params)
    if not model:
        raise InputFileError(path, "llama.cpp could not load this GGUF model")
    params = llama.llama_context_default_params()
    trained = llama.llama_model_n_ctx_train(model)
    params.n_ctx = min(n_ctx, trained) if trained > 0 else n_ctx
    params.n_batch = n_batch
    params.n_ubatch = n_batch
    params.n_seq_max = 1
    params.n_threads = threads
    params.n_threads_batch = batch_threads
    # Full-size sliding-window cache (Gemma 3): without it llama.cpp keeps only the window and a
    # cached prefix cannot be cut back to where the new turn starts.
    params.swa_full = True
    params.no_perf = True
    ctx = llama.llama_init_from_model(model, params)
    if not ctx:
        llama.llama_model_free(model)
        raise CompanionError(f"llama.cpp could not create a context of {n_ctx} tokens for {path}")
    return model, ctx


def model_chat_template(model: Any) -> str | None:
    found = llama.llama_model_chat_template(model, None)
    return found.decode("utf-8") if found else None


def render_template(template: str, messages: list[dict[str, Any]], *, bos_token: str, eos_token: str) -> str:
    """Render a chat template the way transformers does (sandboxed jinja2, same globals)."""
    return _compiled(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos_token, eos_token=eos_token
    )


_templates: dict[str, Any] = {}


def _compiled(template: str) -> Any:
    if template not in _templates:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise CompanionError(f"chat template: {message}")

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        _templates[template] = env.from_string(template)
    return _templates[template]


def load_adapter(model: Any, path: Path) -> Any:
    handle = llama.llama_adapter_lora_init(model, str(path).encode())
    if not handle:
        raise RuntimeError("llama.cpp refused the converted LoRA (see the log above)")
    return handle


def set_adapter(ctx: Any, handle: Any) -> None:
    if handle is None:
        llama.llama_set_adapters_lora(ctx, None, 0, None)
        return
    adapters = (llama.llama_adapter_lora_p_ctypes * 1)(handle)
    scales = (ctypes.c_float * 1)(1.0)
    if llama.llama_set_adapters_lora(ctx, adapters, 1, scales) != 0:
        raise CompanionError("llama.cpp could not apply the LoRA adapter")


def get_seq_state(ctx: Any, seq: int) -> bytes:
    size = llama.llama_state_seq_get_size(ctx, seq)
    buffer = (ctypes.c_uint8 * size)()
    written = llama.llama_state_seq_get_data(ctx, buffer, size, seq)
    return bytes(buffer)[:written]


def set_seq_state(ctx: Any, seq: int, state: bytes) -> bool:
    buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
    return llama.llama_state_seq_set_data(ctx, buffer, len(state), seq) > 0


class Sampler:
    """Picks each next token as the reference's generate() does: repetition penalty over prompt
    and reply (transformers penalises every token in input_ids), then greedy, or temperature ->
    top-k 50 -> top-p -> draw (transformers' warper order and default top_k). Before that, the
    engine's end-of-turn aliases are merged into its end token (see `llm.end_aliases`). Both edit
    the context's logits row in place (`editable_logits`).

    Greedy decoding works on that row in numpy: the penalty touches only the tokens seen so far,
    where llama.cpp's sampler chain copies and scans all 262k candidates of Gemma's vocabulary
    at every step (1.7 ms a token, ~9% of a decode step on 2 cores)."""

    def __init__(self, engine: Any, params: Any, prompt: Any) -> None:
        self.engine = engine
        self.penalty = params.repetition_penalty or 1.0
        self.chain = None
        if params.temperature <= 0:  # greedy: numpy, below
            self.seen = np.unique(np.asarray(prompt, dtype=np.int64))
            return
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        self.chain = chain
        if self.penalty != 1.0:
            penalties = llama.llama_sampler_init_penalties(engine.n_vocab, engine.n_ctx, self.penalty, 0.0, 0.0)
            llama.llama_sampler_chain_add(chain, penalties)
            for token in prompt:
                llama.llama_sampler_accept(penalties, token)
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_temp(params.temperature))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_k(50))
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_top_p(params.top_p, 1))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        llama.llama_sampler_chain_add(chain, llama.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def __enter__(self) -> Any:
        engine, chain = self.engine, self.chain

        def logits() -> np.ndarray:
            return merge_into_end(engine.editable_logits(), engine.end_id, engine.end_aliases)

        if chain is not None:

            def draw() -> int:
                logits()
                return llama.llama_sampler_sample(chain, engine.ctx, -1)

            return draw

        def pick() -> int:
            row = logits()
            if self.penalty != 1.0:
                seen = row[self.seen]
                row[self.seen] = np.where(seen > 0, seen / self.penalty, seen * self.penalty)
            token = int(row.argmax())
            if self.penalty != 1.0 and not _contains(self.seen, token):
                self.seen = np.insert(self.seen, np.searchsorted(self.seen, token), token)
            return token

        return pick

    def __exit__(self, *exc: Any) -> None:
        if self.chain is not None:
            llama.llama_sampler_free(self.chain)


def _contains(ordered: np.ndarray, value: int) -> bool:
    at = int(np.searchsorted(ordered, value))
    return at < len(ordered) and int(ordered[at]) == value
