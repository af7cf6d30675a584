"""`llm.llamacpp`: the fast CPU path. The embedded GGUF runs in llama.cpp (through the C API that
llama-cpp-python ships), with the character's peft adapter converted once to a llama.cpp LoRA GGUF.

- Same prompt as the reference: the chat template is rendered the way transformers renders it
  and tokenized by llama.cpp (tests check the ids match the reference tokenizer's).
- Prefix reuse: the KV cache of the last conversation stays in the context; a new turn keeps the
  longest common token prefix (persona, examples, earlier turns) and evaluates only the rest. A few
  other conversations' caches are kept as saved sequence states (one process, many users).
- Adapters llama.cpp cannot express (DoRA, trained embeddings, other modules) and models that are
  not GGUF go to the transformers + peft reference path (`llm.local`) with a warning saying why;
  so does everything when llama-cpp-python is not installed.
- A prompt longer than the context drops the oldest history first; generation stops at the end
  of the context instead of failing.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import hashlib
import importlib
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from pydantic import BaseModel

from companion.errors import CompanionError, InputFileError
from companion.foreground import FOREGROUND
from companion.llm.base import GenerationParams, GenerationRequest, StopStringFilter
from companion.llm.compute_thread import ComputeThread
from companion.llm.embedded import EMBEDDED_MODELS
from companion.llm.end_aliases import gguf_end_aliases
from companion.llm.local import KNOWN_END_OF_TURN, LocalLLM, LocalLLMSettings, check_adapter_matches
from companion.llm.lora_gguf import BaseModelInfo, UnsupportedAdapter, adapter_digest, convert_adapter
from companion.messages import ChatMessage
from companion.plugins import PluginContext

log = logging.getLogger(__name__)
_DONE = object()
INSTALL_HINT = 'pip install -c constraints.txt "companion[fast]" (builds llama-cpp-python; see README)'
# llama.cpp architecture -> transformers model_type, to check adapters made for another base.
HF_MODEL_TYPES = {"gemma3": "gemma3_text", "llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi3": "phi3"}


class LlamaCppSettings(BaseModel):
    model: str = "gemma3-270m"
    """An embedded model name (gemma3-270m, smollm2-135m) or a .gguf file; anything else runs on
    the reference path."""
    threads: int | None = None
    """CPU threads. Default: tuned while decoding between the cores this process may use and
    fewer (see ThreadTuner); a number fixes it."""
    context_tokens: int = 4096
    batch_tokens: int = 128
    """Prompt tokens per llama.cpp call. A cancelled prefill (the voice loop's speculative one when
    the user goes on speaking, a turn the user barges in on) stops between calls: within ~0.2 s
    at 128 tokens. 128 prefill as fast as 512 on 2 cores (610 tok/s); 64 are 15% slower."""
    chat_template: str | None = None
    cached_conversations_mb: int = 512
    """Memory for the KV caches of conversations other than the active one, so a returning user's
    persona and history are not read again. Gemma-3-270M takes ~18 KB a token: a 1.8k-token
    conversation with Mochi ~33 MB, so 512 MB keep ~15. A bot passes each user's name into the
    persona, so users share little more than the first line: with 8 users taking turns in a
    row, 4 cached conversations left every turn cold (~1.8k tokens, 4-5 s on 2 cores)."""
    end_aliases: bool = True
    """Never emit tokens whose output rows are indistinguishable from the end-of-turn marker's
    (untrained rows of a base model, e.g. Gemma-3-270M's `<unusedN>`); their probability goes to
    the end-of-turn marker, so replies end where the adapter says (see `llm.end_aliases`)."""


@dataclass
class TurnStats:
    """What the last generation did, for benchmarks and tests."""

    prompt_tokens: int = 0
    reused_tokens: int = 0
    prefill_s: float = 0.0
    first_token_s: float = 0.0
    generated_tokens: int = 0
    decode_s: float = 0.0
    trimmed_messages: int = 0
    path: str = "llamacpp"
    notes: list[str] = field(default_factory=list)


class LlamaCppLLM:
    Settings = LlamaCppSettings

    def __init__(self, settings: LlamaCppSettings, context: PluginContext) -> None:
        self.settings = settings
        self.context = context
        self.on_status: Callable[[str], None] = lambda message: log.info(message)
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()
        self._engine: _Engine | None = None
        self._unavailable: str | None = None  # why the whole model runs on the reference path
        self._reference_llm: LocalLLM | None = None
        self._adapters: dict[Path, Any] = {}  # adapter folder -> llama.cpp handle, or a reason string
        self._base_info: BaseModelInfo | None = None
        self.gguf_path: Path | None = None
        self.last_stats = TurnStats()
        self._compute = ComputeThread("llm.llamacpp")  # every llama.cpp computation runs here

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        with self._load_lock:
            if self._engine is not None or self._unavailable is not None:
                return
            gguf = self._resolve_gguf()
            if gguf is None:
                return
            try:
                llamacpp_lib = importlib.import_module("companion.llm.llamacpp_lib")
            except ImportError as error:
                self._go_reference(f"llama-cpp-python is not installed ({error}); install it with {INSTALL_HINT}")
                return
            template = self.settings.chat_template
            if template is None and self.settings.model in EMBEDDED_MODELS:
                template = EMBEDDED_MODELS[self.settings.model].chat_template
            self._engine = self._compute.run(
                lambda: _Engine(
                    llamacpp_lib,
                    gguf,
                    n_ctx=self.settings.context_tokens,
                    n_batch=self.settings.batch_tokens,
                    threads=self.settings.threads,
                    chat_template=template,
                    saved_bytes=self.settings.cached_conversations_mb << 20,
                )
            )
            self.gguf_path = gguf
            if self.settings.end_aliases:
                engine = self._engine
                cache = self.context.data_dir / "models" / "end-aliases"
                engine.end_aliases = gguf_end_aliases(gguf, engine.end_id, cache, engine.fingerprint)

    def _resolve_gguf(self) -> Path | None:
        name = self.settings.model
        if name in EMBEDDED_MODELS:
            model = EMBEDDED_MODELS[name]
            scratch = self.context.data_dir / "models" / "gguf"
            scratch.mkdir(parents=True, exist_ok=True)
            stamp = scratch / f".{name}.verified"
            try:
                known = Path(stamp.read_text(encoding="utf-8").split("\n")[0])
                if stamp.read_text(encoding="utf-8").split("\n")[1] == _file_key(known):
                    return known  # assembled and checked before: skip re-hashing 500 MB
            except (OSError, IndexError):
                pass
            try:
                found = model.locate_gguf(scratch)
            except ModuleNotFoundError:
                raise CompanionError(f"embedded model {name!r} is not installed: {model.install_hint}") from None
            stamp.write_text(f"{found}\n{_file_key(found)}", encoding="utf-8")
            return found
        path = Path(name).expanduser()
        if path.suffix.lower() == ".gguf":
            if not path.is_file():
                raise InputFileError(path, "model file not found")
            return path
        self._go_reference(f"model {name!r} is not a GGUF file")
        return None

    def _go_reference(self, reason: str) -> None:
        log.warning("llm.llamacpp: using the transformers reference path for everything: %s", reason)
        self._unavailable = reason

    def _reference(self) -> LocalLLM:
        if self._reference_llm is None:
            settings = LocalLLMSettings(
                model=self.settings.model,
                threads=self.settings.threads,
                chat_template=self.settings.chat_template,
                end_aliases=self.settings.end_aliases,
            )
            self._reference_llm = LocalLLM(settings, self.context)
            self._reference_llm.on_status = self.on_status
        return self._reference_llm

    @property
    def engine(self) -> _Engine:
        self.load()
        if self._engine is None:
            raise CompanionError(f"the llama.cpp engine is not available: {self._unavailable}")
        return self._engine

    @property
    def fast(self) -> bool:
        """True when the model runs in llama.cpp (adapters may still fall back one by one)."""
        self.load()
        return self._engine is not None

    # -- tokens --------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        self.load()
        if self._engine is None:
            return self._reference().count_tokens(text)
        return len(self._engine.tokenize(text))

    def prompt_tokens(self, messages: Sequence[ChatMessage], max_new_tokens: int = 0) -> tuple[list[int], int]:
        """The prompt's token ids, with the oldest history dropped until it leaves room for
        `max_new_tokens` (at least a quarter of the context); also how many messages were dropped."""
        engine = self.engine
        budget = engine.n_ctx - min(max(max_new_tokens, 1), engine.n_ctx * 3 // 4)
        messages = list(messages)
        dropped = 0
        while True:
            ids = engine.tokenize(engine.render(messages), special=True)
            if len(ids) <= budget:
                return ids, dropped
            start = 1 if messages and messages[0].role == "system" else 0
            if len(messages) - start <= 1:  # only the new turn is left: keep its end
                log.warning("llm.llamacpp: the prompt (%d tokens) does not fit; keeping its last %d", len(ids), budget)
                return ids[:1] + ids[len(ids) - budget + 1 :], dropped
            # drop the oldest exchange (two messages keep user/assistant alternation)
            remove = 2 if len(messages) - start > 2 else 1
            del messages[start : start + remove]
            dropped += remove

    # -- adapters ------------------------------------------------------------------------
    def adapter_route(self, adapter: Path | None) -> tuple[Any, str | None]:
        """(llama.cpp adapter handle or None, None) on the fast path, or (None, reason) when this
        adapter has to run on the reference path."""
        if adapter is None:
            return None, None
        adapter = adapter.resolve()
        if adapter not in self._adapters:
            self._adapters[adapter] = self._prepare_adapter(adapter)
        found = self._adapters[adapter]
        return (None, found) if isinstance(found, str) else (found, None)

    def adapter_gguf_path(self, adapter: Path) -> Path:
        """Where the converted LoRA GGUF of this adapter is cached (keyed by content and base)."""
        name = f"{adapter_digest(adapter)}-{self.engine.fingerprint}.gguf"
        return self.context.data_dir / "models" / "lora-gguf" / name

    def reset_cache(self) -> None:
        """Forget every cached conversation (the next turn starts cold)."""
        with self._lock:
            if self._engine is not None:
                self._engine.reset()

    def _prepare_adapter(self, adapter: Path) -> Any:
        engine = self.engine
        if self._base_info is None:
            self._base_info = BaseModelInfo.from_gguf(engine.path)
        base = self._base_info
        # A missing, corrupt or declared-for-another-base adapter is refused on either path.
        check_adapter_matches(
            adapter / "adapter_config.json",
            self.settings.model,
            SimpleNamespace(model_type=HF_MODEL_TYPES.get(base.arch)),
        )
        target = self.context.data_dir / "models" / "lora-gguf" / f"{adapter_digest(adapter)}-{engine.fingerprint}.gguf"
        try:
            if not target.is_file():
                convert_adapter(adapter, base, target)
            return engine.load_adapter(target)
        except UnsupportedAdapter as why:
            reason = f"adapter {adapter} cannot run on llama.cpp: {why}"
        except (OSError, ValueError, RuntimeError) as error:  # unreadable weights, llama.cpp refusal
            reason = f"adapter {adapter} could not be converted for llama.cpp ({error})"
        log.warning("llm.llamacpp: %s; using the transformers + peft reference path for it", reason)
        return reason

    # -- generation ----------------------------------------------------------------------
    def uses_reference(self, request: GenerationRequest) -> bool:
        self.load()
        if self._engine is None:
            return True
        with self._lock:
            return self.adapter_route(request.adapter)[1] is not None

    def _generate(self, request: GenerationRequest, cancel: threading.Event, emit: Callable[[str], None]) -> None:
        engine = self.engine
        params = request.params
        with self._lock:
            handle, _ = self.adapter_route(request.adapter)
            tokens, dropped = self.prompt_tokens(request.messages, params.max_new_tokens)
            stats = TurnStats(prompt_tokens=len(tokens), trimmed_messages=dropped)
            self.last_stats = stats
            started = time.perf_counter()
            engine.set_adapter(handle)
            stats.reused_tokens = engine.prepare(tokens, cancel)
            if cancel.is_set():
                return
            stats.prefill_s = time.perf_counter() - started
            room = engine.n_ctx - len(tokens)
            decoder = _PieceDecoder(engine)
            with engine.sampler(params, tokens) as sample:
                decode_started = time.perf_counter()
                for _ in range(min(params.max_new_tokens, room)):
                    if cancel.is_set():
                        break
                    token = sample()
                    if token in engine.stop_ids:
                        break
                    stats.generated_tokens += 1
                    if piece := decoder.push(token):
                        if not stats.first_token_s:
                            stats.first_token_s = time.perf_counter() - started
                        emit(piece)
                    engine.advance(token)
                if tail := decoder.flush():
                    emit(tail)
                stats.decode_s = time.perf_counter() - decode_started

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        if await asyncio.to_thread(self.uses_reference, request):
            self.last_stats = TurnStats(path="reference")
            async for piece in self._reference().stream(request):
                yield piece
            return
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[object] = asyncio.Queue()
        cancel = threading.Event()

        def produce() -> None:
            try:
                self._generate(request, cancel, lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece))
            except BaseException as exc:  # handed to the consumer
                loop.call_soon_threadsafe(pieces.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(pieces.put_nowait, _DONE)

        worker = asyncio.wrap_future(self._compute.submit(produce))
        stops = StopStringFilter(request.params.stop)
        try:
            while (item := await pieces.get()) is not _DONE:
                if isinstance(item, BaseException):
                    raise item
                if text := stops.feed(str(item)):
                    yield text
                if stops.stopped:
                    return
            if tail := stops.flush():
                yield tail
        finally:
            cancel.set()  # generation stops at its next token; wait so nothing outlives the turn
            await worker

    # -- scoring (equivalence tests, benchmarks) -----------------------------------------
    def token_logprobs(self, tokens: Sequence[int], adapter: Path | None = None) -> list[float]:
        """log p(token[i] | tokens[:i]) for i >= 1, with the adapter applied (fast path only)."""
        return self._compute.run(self._score, list(tokens), adapter)

    def _score(self, tokens: list[int], adapter: Path | None) -> list[float]:
        # on the compute thread, like _generate: the lock is never held while waiting for that thread
        engine = self.engine
        with self._lock:
            handle, reason = self.adapter_route(adapter)
            if reason:
                raise CompanionError(reason)
            engine.set_adapter(handle)
            return engine.score(tokens)


def _file_key(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_size}:{stat.st_mtime_ns}"


def default_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(available, 8))


def thread_candidates(cores: int) -> list[int]:
    """All the cores first, then half of them, then one."""
    return sorted({cores, max(1, cores // 2), 1}, reverse=True)


class ThreadTuner:
    """Picks llama.cpp's thread count for decoding from measured decode steps.

    llama.cpp's worker threads meet at a barrier after every graph node (~900 per token for
    Gemma-3-270M) and spin while they wait. On a laptop where other programs want the same cores,
    one descheduled worker stalls the rest: on our 2-core test machine under load, 2 threads
    decoded at 1-2 tokens/s where 1 thread made 14-19. On an idle machine all cores are fastest.
    So we time every decode step (an exponential average per thread count) and now and then try
    each alternative for a short burst of steps; the worse an alternative was, the longer until it
    is tried again (64 to 4096 steps), which keeps exploring under ~6% of the time either way.
    The first step after a change of thread count is never counted: it pays for waking the
    workers, and counting it made a lone 2-thread step look slower than it is, so the tuner kept
    1 thread on an idle 2-core machine."""

    def __init__(self, candidates: list[int], *, smoothing: float = 0.3, burst: int = 3) -> None:
        self.candidates = candidates
        self.cost: dict[int, float] = {}
        self.smoothing = smoothing
        self.burst = burst
        self.since: dict[int, int] = dict.fromkeys(candidates, 0)
        self.last: int | None = None  # the thread count of the previous step
        self.trying: tuple[int, int] | None = None  # (alternative, steps left in its burst)

    def best(self) -> int:
        measured = [c for c in self.candidates if c in self.cost]
        return min(measured, key=self.cost.__getitem__) if measured else self.candidates[0]

    def next(self) -> int:
        """The thread count for the next decode step."""
        if len(self.candidates) == 1:
            return self.candidates[0]
        if self.trying is None:
            self.trying = self._due()
        return self.trying[0] if self.trying is not None else self.best()

    def _due(self) -> tuple[int, int] | None:
        """The alternative whose turn has come, with its burst (a warm-up step, then measured ones)."""
        for candidate in self.candidates:
            if candidate not in self.cost:
                return candidate, self.burst + 1
        best = self.best()
        shortest = 16 * (self.burst + 1)
        for candidate in self.candidates:
            if candidate != best:
                wait = min(64 * shortest, max(shortest, round(shortest * self.cost[candidate] / self.cost[best])))
                if self.since[candidate] >= wait:
                    return candidate, self.burst + 1
        return None

    def record(self, threads: int, seconds: float) -> None:
        warm_up, self.last = threads != self.last, threads
        if self.trying is not None and self.trying[0] == threads:
            left = self.trying[1] - 1
            self.trying = (threads, left) if left > 0 else None
        for candidate in self.since:
            self.since[candidate] = 0 if candidate == threads else self.since[candidate] + 1
        if warm_up:
            return
        old = self.cost.get(threads)
        self.cost[threads] = seconds if old is None else old + self.smoothing * (seconds - old)


class _PieceDecoder:
    """Token ids -> text pieces, never splitting a multi-byte character; control tokens vanish."""

    def __init__(self, engine: _Engine) -> None:
        self.engine = engine
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token: int) -> str:
        return self.utf8.decode(self.engine.piece(token))

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class _Engine:
    """One llama.cpp model and context (not thread-safe: the plugin serialises calls)."""

    def __init__(
        self,
        lib: Any,
        path: Path,
        *,
        n_ctx: int,
        n_batch: int,
        threads: int | None,
        chat_template: str | None,
        saved_bytes: int,
    ) -> None:
        self.lib = lib
        self.path = path
        self.owner = threading.get_ident()  # the compute thread: the only one that may evaluate
        stat = path.stat()
        self.fingerprint = hashlib.sha256(f"{path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode()).hexdigest()[:12]
        self.tuner = ThreadTuner([threads] if threads else thread_candidates(default_threads()))
        self.threads = self.tuner.best()
        # Prompt batches always use every candidate core: between two barriers each worker has a
        # batch's worth of work, so a descheduled worker costs little (measured with a niced busy
        # process beside it: 510 tokens/s on 2 threads, 328 on 1).
        self.batch_threads = max(self.tuner.candidates)
        self.model, self.ctx = lib.load(
            path, n_ctx=n_ctx, n_batch=n_batch, threads=self.threads, batch_threads=self.batch_threads
        )
        self.vocab = lib.llama.llama_model_get_vocab(self.model)
        self.n_ctx = lib.llama.llama_n_ctx(self.ctx)
        self.n_batch = n_batch
        self.n_vocab = lib.llama.llama_vocab_n_tokens(self.vocab)
        self.memory = lib.llama.llama_get_memory(self.ctx)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self.template = chat_template or lib.model_chat_template(self.model)
        if not self.template:
            raise CompanionError(f"model {path} has no chat template: set llm.chat_template in the config")
        self.bos_token = self.token_text(lib.llama.llama_vocab_bos(self.vocab))
        self.eos_token = self.token_text(lib.llama.llama_vocab_eos(self.vocab))
        self.stop_ids = self._stop_ids()
        eot = lib.llama.llama_vocab_eot(self.vocab)
        self.end_id = eot if eot >= 0 else lib.llama.llama_vocab_eos(self.vocab)
        self.end_aliases = np.zeros(0, dtype=np.int64)  # merged into end_id when sampling (llm.end_aliases)
        self.cached: list[int] = []  # tokens whose KV is in the context (sequence 0), in order
        self.logits_for = 0  # the context's logits are those after cached[:logits_for] (0: none kept)
        self.adapter: Any = None
        self.saved: OrderedDict[tuple[Any, tuple[int, ...]], bytes] = OrderedDict()
        self.max_saved_bytes = saved_bytes
        self._batch = lib.llama.llama_batch_init(max(n_batch, 1), 0, 1)
        self._one = lib.llama.llama_batch_init(1, 0, 1)
        self.calibrate()

    def calibrate(self) -> None:
        """Time a burst of one-token steps on each thread count, so the first turn already runs on
        a sensible one (tens of milliseconds on an idle machine)."""
        if len(self.tuner.candidates) > 1:
            bos = max(self.lib.llama.llama_vocab_bos(self.vocab), 0)
            for threads in reversed(self.tuner.candidates):
                self._use_threads(threads)
                for _ in range(self.tuner.burst + 1):
                    self._clear_memory()
                    started = time.perf_counter()
                    self._decode(self._one, [bos], 0, logits_last=True)
                    self.tuner.record(threads, time.perf_counter() - started)
            self._clear_memory()

    def __del__(self) -> None:  # the process usually keeps one engine for its lifetime
        try:
            self.lib.llama.llama_batch_free(self._batch)
            self.lib.llama.llama_batch_free(self._one)
            self.lib.llama.llama_free(self.ctx)
            self.lib.llama.llama_model_free(self.model)
        except Exception:
            pass

    # -- text ----------------------------------------------------------------------------
    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        size = len(data) + 8
        out = (self.lib.llama.llama_token * size)()
        n = self.lib.llama.llama_tokenize(self.vocab, data, len(data), out, size, False, special)
        if n < 0:
            size = -n
            out = (self.lib.llama.llama_token * size)()
            n = self.lib.llama.llama_tokenize(self.vocab, data, len(data), out, size, False, special)
        return list(out[:n])

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens: none)."""
        found = self._pieces.get(token)
        if found is None:
            n = self.lib.llama.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
            found = self._piece_buf.raw[: max(n, 0)]
            self._pieces[token] = found
        return found

    def token_text(self, token: int) -> str:
        if token < 0:
            return ""
        n = self.lib.llama.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, True)
        return self._piece_buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def render(self, messages: Sequence[ChatMessage]) -> str:
        return self.lib.render_template(
            self.template,
            [m.model_dump() for m in messages],
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def _stop_ids(self) -> set[int]:
        """End of sequence and end of turn, as the reference stops (eos + known end-of-turn tokens)."""
        llama = self.lib.llama
        ids = {llama.llama_vocab_eos(self.vocab), llama.llama_vocab_eot(self.vocab)}
        for text in KNOWN_END_OF_TURN:
            found = self.tokenize(text)
            if len(found) == 1 and llama.llama_vocab_is_control(self.vocab, found[0]):
                ids.add(found[0])
        return {i for i in ids if i >= 0}

    # -- adapters ------------------------------------------------------------------------
    def load_adapter(self, path: Path) -> Any:
        return self.lib.load_adapter(self.model, path)

    def set_adapter(self, handle: Any) -> None:
        if handle is self.adapter:
            return
        self._save_state()
        self.lib.set_adapter(self.ctx, handle)
        self.adapter = handle
        self._clear_memory()
        self.cached = []

    # -- KV cache ------------------------------------------------------------------------
    def _clear_memory(self) -> None:
        self.lib.llama.llama_memory_clear(self.memory, True)
        self.logits_for = 0

    def reset(self) -> None:
        self.saved.clear()
        self._clear_memory()
        self.cached = []

    def prepare(self, tokens: list[int], cancel: threading.Event | None = None) -> int:
        """Make the context hold `tokens` with logits for the last one, reusing the longest cached
        prefix (this conversation's, or a saved one's). Returns how many tokens were reused."""
        keep = _common_prefix(self.cached, tokens)
        saved_key, saved_keep = self._best_saved(tokens)
        if saved_key is not None and saved_keep > keep + 32:
            state = self.saved.pop(saved_key)  # before saving this one, which may evict the oldest
            self._save_state()
            keep = saved_keep if self._restore(saved_key[1], state) else 0
        elif keep < len(self.cached) and keep < len(self.cached) // 2:
            self._save_state()  # a different conversation: keep this one's cache for later
        if not keep == len(tokens) == len(self.cached) == self.logits_for:
            keep = min(keep, len(tokens) - 1)  # the last token is evaluated again for its logits
        if keep < len(self.cached) and not self.lib.llama.llama_memory_seq_rm(self.memory, 0, keep, -1):
            self._clear_memory()
            keep = 0
        self.cached = self.cached[:keep]
        self._use_threads(self.tuner.best())
        for start in range(keep, len(tokens), self.n_batch):
            FOREGROUND.wait()  # her speech being synthesised goes first
            if cancel is not None and cancel.is_set():
                return keep
            chunk = tokens[start : start + self.n_batch]
            self._decode(self._batch, chunk, start, logits_last=start + len(chunk) == len(tokens))
            self.cached.extend(chunk)
        return keep

    def advance(self, token: int) -> None:
        """Evaluate one generated token (appending it to the cache), on the thread count the tuner
        picks, timing it for the tuner."""
        FOREGROUND.wait()  # her speech being synthesised goes first
        self._use_threads(self.tuner.next())
        started = time.perf_counter()
        self._decode(self._one, [token], len(self.cached), logits_last=True)
        self.tuner.record(self.threads, time.perf_counter() - started)
        self.cached.append(token)

    def _use_threads(self, threads: int) -> None:
        if threads != self.threads:
            self.lib.llama.llama_set_n_threads(self.ctx, threads, self.batch_threads)
            self.threads = threads

    def _decode(self, batch: Any, tokens: Sequence[int], start: int, *, logits_last: bool, all_logits=False) -> None:
        if threading.get_ident() != self.owner:
            # each calling thread gets its own OpenMP team; two teams on 2 cores cost a third of decode speed
            raise RuntimeError("llama.cpp evaluated off its compute thread (submit the work to its ComputeThread)")
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = all_logits
        if logits_last:
            batch.logits[len(tokens) - 1] = True
        result = self.lib.llama.llama_decode(self.ctx, batch)
        self.logits_for = start + len(tokens) if result == 0 and (logits_last or all_logits) else 0
        if result != 0:
            self.lib.llama.llama_memory_seq_rm(self.memory, 0, start, -1)
            raise CompanionError(f"llama.cpp could not evaluate the prompt (llama_decode returned {result})")

    def _best_saved(self, tokens: list[int]) -> tuple[Any, int]:
        best, best_keep = None, 0
        for key in self.saved:
            adapter, cached = key
            if adapter == self._adapter_key():
                keep = _common_prefix(cached, tokens)
                if keep > best_keep:
                    best, best_keep = key, keep
        return best, best_keep

    def _adapter_key(self) -> int:
        return ctypes.cast(self.adapter, ctypes.c_void_p).value or 0 if self.adapter is not None else 0

    def _save_state(self) -> None:
        if self.max_saved_bytes <= 0 or len(self.cached) < 64:
            return
        key = (self._adapter_key(), tuple(self.cached))
        self.saved[key] = self.lib.get_seq_state(self.ctx, 0)
        self.saved.move_to_end(key)
        while sum(len(state) for state in self.saved.values()) > self.max_saved_bytes:
            self.saved.popitem(last=False)  # the least recently used

    def _restore(self, tokens: tuple[int, ...], state: Any) -> bool:
        """Load a saved conversation's cache; False (and an empty cache) if llama.cpp refuses it."""
        self._clear_memory()
        if self.lib.set_seq_state(self.ctx, 0, state):
            self.cached = list(tokens)  # without logits (logits_for is 0)
            return True
        self._clear_memory()
        self.cached = []
        return False

    # -- sampling ------------------------------------------------------------------------
    def sampler(self, params: GenerationParams, prompt: Sequence[int]) -> Any:
        return self.lib.Sampler(self, params, prompt)

    def last_logits(self) -> Any:
        """A copy of the logits after the last evaluated token (numpy float32)."""
        return self._logits_row().copy()

    def editable_logits(self) -> Any:
        """The logits after the last evaluated token, for a sampler to edit in place: from then on
        they no longer count as the cached prompt's (the next prepare evaluates its last token)."""
        self.logits_for = 0
        return self._logits_row()

    def _logits_row(self) -> Any:
        return np.ctypeslib.as_array(self.lib.llama.llama_get_logits_ith(self.ctx, -1), shape=(self.n_vocab,))

    def score(self, tokens: list[int], chunk: int = 64) -> list[float]:
        """Log-probabilities of tokens[1:], evaluated fresh (the cache is rebuilt afterwards).
        Small chunks: llama.cpp keeps an output buffer as large as the most logits ever asked for."""
        self._save_state()
        self._clear_memory()
        self.cached = []
        out: list[float] = []
        for start in range(0, len(tokens), chunk):
            part = tokens[start : start + chunk]
            self._decode(self._batch, part, start, logits_last=True, all_logits=True)
            self.cached.extend(part)
            for i in range(len(part)):
                target = start + i + 1
                if target >= len(tokens):
                    break
                row = self.lib.llama.llama_get_logits_ith(self.ctx, i)
                logits = np.ctypeslib.as_array(row, shape=(self.n_vocab,)).astype(np.float64)
                top = logits.max()
                out.append(float(logits[tokens[target]] - top - np.log(np.exp(logits - top).sum())))
        return out
