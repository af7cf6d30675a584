"""`llm.local`: transformers + peft in this process. The reference and training-time path.

The base model loads once; each character's LoRA adapter is attached by name on first use
and switched per request, so one process can serve many characters.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from companion.errors import CompanionError, InputFileError
from companion.foreground import FOREGROUND
from companion.llm.base import GenerationRequest, StopStringFilter
from companion.llm.embedded import EMBEDDED_MODELS, embedded_model_dir
from companion.llm.hardware import pick_device, pick_dtype
from companion.plugins import PluginContext

log = logging.getLogger(__name__)
KNOWN_END_OF_TURN = ("<end_of_turn>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>")
_DONE = object()


class LocalLLMSettings(BaseModel):
    model: str = "gemma3-270m"
    """An embedded model name (gemma3-270m, smollm2-135m), a local folder, or a hub id."""
    device: str = "auto"
    dtype: str = "auto"
    threads: int | None = None
    chat_template: str | None = None
    end_aliases: bool = True
    """Never emit tokens whose output rows are indistinguishable from the end-of-turn marker's
    (untrained rows of a base model, e.g. Gemma-3-270M's `<unusedN>`); their probability goes to
    the end-of-turn marker, so replies end where the adapter says (see `llm.end_aliases`)."""


class LocalLLM:
    Settings = LocalLLMSettings

    def __init__(self, settings: LocalLLMSettings, context: PluginContext) -> None:
        self.settings = settings
        self.context = context
        self.on_status: Callable[[str], None] = lambda message: log.info(message)
        self._load_lock = threading.Lock()
        self._generate_lock = threading.Lock()
        self._model: Any = None
        self._tokenizer: Any = None
        self._adapters: dict[Path, str] = {}
        self._end_aliases: tuple[int | None, Any] | None = None
        self.model_dir: Path | None = None

    # -- loading -------------------------------------------------------------------------
    def load(self) -> None:
        with self._load_lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            hf_logging.set_verbosity_error()
            hf_logging.disable_progress_bar()
            if self.settings.threads:
                torch.set_num_threads(self.settings.threads)
            source = self._resolve_model()
            device = pick_device(self.settings.device)
            dtype = pick_dtype(device, self.settings.dtype)
            tokenizer = AutoTokenizer.from_pretrained(source)
            if self.settings.chat_template:
                tokenizer.chat_template = self.settings.chat_template
            if not tokenizer.chat_template:
                raise CompanionError(f"model {source} has no chat template: set llm.chat_template in the config")
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype).to(device)
            model.eval()
            self._tokenizer, self._model = tokenizer, model

    def _resolve_model(self) -> str:
        name = self.settings.model
        if name in EMBEDDED_MODELS:
            self.model_dir = embedded_model_dir(name, self.context.data_dir, on_convert=self.on_status)
            return str(self.model_dir)
        if Path(name).expanduser().exists():
            self.model_dir = Path(name).expanduser()
            return str(self.model_dir)
        return name  # a hub id: works for users with a network or a populated HF cache

    @property
    def tokenizer(self) -> Any:
        self.load()
        return self._tokenizer

    @property
    def model(self) -> Any:
        self.load()
        return self._model

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def end_of_turn_ids(self) -> list[int]:
        tokenizer = self.tokenizer
        ids = set()
        eos = self.model.generation_config.eos_token_id
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        vocab = tokenizer.get_vocab()
        ids.update(vocab[t] for t in KNOWN_END_OF_TURN if t in vocab)
        return sorted(ids)

    def end_aliases(self) -> tuple[int | None, Any]:
        """(end-of-turn id, ids merged into it when sampling), computed once per loaded model;
        no ids when the `end_aliases` setting is off (see `llm.end_aliases`)."""
        if self._end_aliases is None:
            from companion.llm.end_aliases import model_end_aliases

            self._end_aliases = model_end_aliases(
                self.model, self.tokenizer, KNOWN_END_OF_TURN, enabled=self.settings.end_aliases
            )
        return self._end_aliases

    # -- adapters ------------------------------------------------------------------------
    def _activate_adapter(self, adapter: Path | None) -> None:
        """Attach (once) and select the adapter; None means the bare base model."""
        if adapter is None:
            if self._adapters:
                self._model.base_model.disable_adapter_layers()
            return
        adapter = adapter.resolve()
        if adapter not in self._adapters:
            self._attach(adapter)
        self._model.base_model.enable_adapter_layers()
        self._model.set_adapter(self._adapters[adapter])

    def _attach(self, adapter: Path) -> None:
        from peft import PeftModel

        base = self._model.get_base_model() if self._adapters else self._model
        check_adapter_matches(adapter / "adapter_config.json", self.settings.model, base.config)
        weights = adapter / "adapter_model.safetensors"
        check_adapter_weights(weights, base, self.settings.model)
        name = f"a{len(self._adapters)}"
        try:
            if self._adapters:
                self._model.load_adapter(str(adapter), adapter_name=name)
            else:
                self._model = PeftModel.from_pretrained(self._model, str(adapter), adapter_name=name)
                self._model.eval()
        except Exception as error:  # peft raises many kinds; the user needs the file and the reason
            raise InputFileError(weights, f"adapter does not load onto {self.settings.model}: {error}") from None
        self._adapters[adapter] = name

    # -- generation ----------------------------------------------------------------------
    def prompt_ids(self, request: GenerationRequest) -> Any:
        messages = [m.model_dump() for m in request.messages]
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids

    def _generate(self, request: GenerationRequest, cancel: threading.Event, emit: Callable[[str], None]) -> None:
        """Run generate() in this (worker) thread, emitting text pieces as tokens arrive."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        from companion.llm.end_aliases import generate_keywords

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs) -> bool:  # type: ignore[override]
                return cancel.is_set()

        decoder = IncrementalDecoder(self.tokenizer)

        class Streamer:
            prompt_seen = False

            def put(self, value: Any) -> None:
                if not self.prompt_seen:  # generate() first hands over the prompt itself
                    self.prompt_seen = True
                    return
                for token in value.reshape(-1).tolist():
                    if piece := decoder.push(token):
                        emit(piece)
                FOREGROUND.wait()  # called between steps: her speech being synthesised goes first

            def end(self) -> None:
                pass

        params = request.params
        stop_ids = self.end_of_turn_ids()
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "eos_token_id": stop_ids,
            "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else stop_ids[0],
            "stopping_criteria": StoppingCriteriaList([Cancelled()]),
            **generate_keywords(*self.end_aliases(), params.repetition_penalty),
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with self._generate_lock:
            if params.seed is not None:
                torch.manual_seed(params.seed)
            self._activate_adapter(request.adapter)
            ids = self.prompt_ids(request).to(self.model.device)
            with torch.inference_mode():
                self.model.generate(ids, attention_mask=torch.ones_like(ids), streamer=Streamer(), **kwargs)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[str]:
        await asyncio.to_thread(self.load)
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

        worker = threading.Thread(target=produce, name="llm.local.generate", daemon=True)
        worker.start()
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
            cancel.set()  # generation stops at its next token; wait so no thread outlives the turn
            await asyncio.to_thread(worker.join)


class IncrementalDecoder:
    """Turns a token stream into text pieces without splitting multi-byte characters."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = 0

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[self.emitted :], len(text)
        return piece


ADAPTER_INFO = "companion_adapter.json"


def read_adapter_info(folder: Path) -> dict[str, Any]:
    """What companion records beside a peft adapter (its base's architecture, how it was trained),
    kept out of adapter_config.json because peft warns about keys it does not know; {} if absent."""
    path = folder / ADAPTER_INFO
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(path, f"corrupt adapter info ({error})") from None


def check_adapter_matches(config_file: Path, model_name: str, base_config: Any) -> None:
    """Refuse an adapter that is missing, corrupt or made for another base model."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputFileError(config_file, "missing: the adapter folder has no adapter_config.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(config_file, f"corrupt adapter config ({error})") from None
    base = str(config.get("base_model_name_or_path") or "")
    if base in EMBEDDED_MODELS and base != model_name:
        raise InputFileError(config_file, f"adapter was trained on {base}, but the model is {model_name}")
    expected = read_adapter_info(config_file.parent).get("base_architecture")
    actual = getattr(base_config, "model_type", None)
    if expected and actual and expected != actual:
        raise InputFileError(config_file, f"adapter was trained on a {expected} model, but the model is {actual}")
    weights = config_file.parent / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputFileError(weights, "missing: the adapter folder has no adapter_model.safetensors")


def check_adapter_weights(weights: Path, base: Any, model_name: str) -> None:
    """Read the adapter's tensor shapes (not its data) and check each fits the base model's layer,
    before anything is attached: a wrong adapter never half-modifies the loaded model."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(weights, framework="pt") as handle:
            shapes = {key: handle.get_slice(key).get_shape() for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as error:
        raise InputFileError(weights, f"corrupt adapter weights ({error})") from None
    for key, shape in shapes.items():
        module_name, sep, rest = key.removeprefix("base_model.model.").partition(".lora_")
        if not sep:
            continue
        try:
            module = base.get_submodule(module_name)
        except AttributeError:
            raise InputFileError(weights, f"adapter targets {module_name}, which {model_name} does not have") from None
        in_features, out_features = getattr(module, "in_features", None), getattr(module, "out_features", None)
        expected = in_features if rest.startswith("A.") else out_features if rest.startswith("B.") else None
        actual = shape[1] if rest.startswith("A.") else shape[0]
        if expected is not None and actual != expected:
            raise InputFileError(
                weights,
                f"adapter does not load onto {model_name}: {key} has {actual} features where the model has {expected}",
            )
