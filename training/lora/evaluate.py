"""`companion eval`: does the adapter make her more herself? Base model vs base + adapter.

1. Held-out perplexity of her own lines (the eval split the adapter was trained beside,
   rendered exactly as in training; her words only, end-of-turn markers excluded).
2. Format health on a probe set, generated through the chat prompt (`assemble`) with the
   chat sampling settings: the reply ends with the end-of-turn token on its own (no cut at
   max_new_tokens), carries no template or special tokens, and is in the question's language.
3. Side-by-side replies, written with the numbers as Markdown (and JSON for scripts).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from companion import atomic
from companion.character import Character
from companion.config import Settings
from companion.errors import InputFileError
from companion.prompt import assemble
from companion.scripts import HAN_CHAR
from training.lora.config import TrainConfig
from training.lora.data import Renderer, prepare
from training.lora.loss import PackedLoss, score
from training.lora.model import check_adapter_for, load_adapter, load_base, read_adapter_config

DEFAULT_PROBES = Path(__file__).with_name("probes.txt")
GOAL_FORMAT = 0.95
GOAL_PERPLEXITY_REDUCTION = 0.30
TEMPLATE_MARKERS = ("<start_of_turn>", "<end_of_turn>", "<|im_start|>", "<|im_end|>", "<|eot_id|>", "<bos>", "<eos>")
_TAG = re.compile(r"^\s*\[[A-Za-z_]+\]\s*")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af]")
_LATIN = re.compile(r"[A-Za-z]")


def detect_language(text: str) -> str:
    """zh / en / ja / ko / none, by script: enough to tell whether a reply answers in kind."""
    text = _TAG.sub("", text)
    han, kana = len(HAN_CHAR.findall(text)), len(_KANA.findall(text))
    hangul, latin = len(_HANGUL.findall(text)), len(_LATIN.findall(text))
    if kana and kana * 5 >= han:
        return "ja"
    scores = {"zh": han, "ko": hangul, "en": latin / 3}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else "none"


def read_probes(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputFileError(path, "probe file not found") from None
    except UnicodeDecodeError as error:
        raise InputFileError(path, f"not UTF-8 text (byte {error.start})") from None
    probes = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not probes:
        raise InputFileError(path, "no probe questions (one per line)")
    return probes


@dataclass
class Reply:
    text: str
    tokens: int
    clean_end: bool
    leaked: list[str]
    language: str
    language_ok: bool

    @property
    def healthy(self) -> bool:
        return self.clean_end and not self.leaked and self.language_ok and bool(self.text.strip())


@dataclass
class Probe:
    question: str
    language: str
    base: Reply | None = None
    adapter: Reply | None = None


@dataclass
class EvalResult:
    character: str
    adapter_dir: str
    base_model: str
    perplexity: dict[str, Any] = field(default_factory=dict)
    format: dict[str, Any] = field(default_factory=dict)
    goals: dict[str, Any] = field(default_factory=dict)
    probes: list[Probe] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _format_summary(replies: list[Reply]) -> dict[str, Any]:
    n = max(1, len(replies))
    return {
        "replies": len(replies),
        "clean_end": sum(r.clean_end for r in replies) / n,
        "no_leak": sum(not r.leaked for r in replies) / n,
        "language_match": sum(r.language_ok for r in replies) / n,
        "clean_end_and_language": sum(r.clean_end and r.language_ok for r in replies) / n,
        "healthy": sum(r.healthy for r in replies) / n,
        "mean_tokens": sum(r.tokens for r in replies) / n,
    }


class Evaluator:
    def __init__(
        self,
        character: Character,
        settings: Settings,
        *,
        adapter_dir: Path | None = None,
        model: str | None = None,
        probes: list[str] | None = None,
        max_new_tokens: int | None = None,
        seed: int = 0,
        batch_size: int = 16,
        eval_samples: int | None = None,
        on_status=None,
    ) -> None:
        self.character = character
        self.settings = settings
        self.adapter_dir = adapter_dir or character.adapter_dir
        self.model = model
        self.probes = probes
        self.max_new_tokens = max_new_tokens or settings.max_new_tokens
        self.seed = seed
        self.batch_size = batch_size
        self.eval_samples = eval_samples
        self.on_status = on_status or (lambda text: None)

    def run(self, *, perplexity: bool = True, generate: bool = True) -> EvalResult:
        adapter_config = read_adapter_config(self.adapter_dir)
        config_file = self.adapter_dir / "train_config.json"
        train_config = TrainConfig.from_file(config_file) if config_file.is_file() else TrainConfig()
        # the adapter is judged on the base it was trained on (the only one its weights fit) unless
        # told otherwise; perplexity is scored on that base's transformers reference either way
        model_name = self.model or train_config.model
        check_adapter_for(self.adapter_dir, model_name, self.settings.data_dir)
        self.on_status(f"loading {model_name} and the adapter in {self.adapter_dir}")
        base = load_base(model_name, self.settings.data_dir, device=train_config.device, precision="auto")
        model = load_adapter(base, self.adapter_dir, model_name=model_name)
        result = EvalResult(
            character=self.character.id,
            adapter_dir=str(self.adapter_dir),
            base_model=str(adapter_config.get("base_model_name_or_path")),
            settings={
                "max_new_tokens": self.max_new_tokens,
                "temperature": self.settings.temperature,
                "top_p": self.settings.top_p,
                "repetition_penalty": self.settings.repetition_penalty,
                "seed": self.seed,
                "precision": base.precision.name,
            },
        )
        chat_model = self._chat_model()
        if chat_model and chat_model != model_name:
            result.notes.append(f"chat is configured for {chat_model}; this adapter was evaluated on {model_name}")
        renderer = Renderer.for_config(base.tokenizer, self.character.card, self.settings, train_config)
        data = prepare(
            self.character.folder, renderer, eval_fraction=train_config.eval_fraction, seed=train_config.seed
        )
        if perplexity:
            held_out = data.eval[: self.eval_samples] if self.eval_samples else data.eval
            result.perplexity = self._perplexity(model, base, held_out, train_config)
            if len(held_out) < len(data.eval):
                result.notes.append(f"perplexity on the first {len(held_out)} of {len(data.eval)} held-out samples")
        if generate:
            questions = self.probes or self._default_probes(data)
            result.probes = self._probe(model, base, questions)
            result.format = {
                "base": _format_summary([p.base for p in result.probes if p.base]),
                "adapter": _format_summary([p.adapter for p in result.probes if p.adapter]),
            }
        result.goals = self._goals(result)
        return result

    def _chat_llm(self) -> Any:
        """Her chat's LLM settings: her card's over the configured ones, as a session merges them."""
        return self.settings.llm.merged(self.character.settings.llm.model_dump(exclude_none=True))

    def _chat_model(self) -> str | None:
        """The local model chat runs for her, or None when chat runs on a remote server."""
        chat_llm = self._chat_llm()
        return chat_llm.options.get("model") if chat_llm.plugin in ("local", "llamacpp") else None

    # -- perplexity ------------------------------------------------------------------------
    def _perplexity(self, model: Any, base: Any, samples: list, config: TrainConfig) -> dict[str, Any]:
        if not samples:
            return {"note": "no held-out samples (the dataset is too small to split)"}
        self.on_status(f"held-out perplexity on {len(samples)} samples")
        loss = PackedLoss(model, chunk=config.loss_chunk_tokens, autocast_dtype=base.precision.autocast)
        with model.disable_adapter():
            before = score(loss, samples, batch_size=self.batch_size, share_prefix=config.share_prefix)
        after = score(loss, samples, batch_size=self.batch_size, share_prefix=config.share_prefix)
        b, a = before.as_dict(), after.as_dict()
        return {
            "samples": len(samples),
            "base": b,
            "adapter": a,
            "lines_perplexity_reduction": 1 - a["lines_perplexity"] / b["lines_perplexity"],
            "perplexity_reduction": 1 - a["perplexity"] / b["perplexity"],
        }

    # -- probes ----------------------------------------------------------------------------
    def _default_probes(self, data: Any, held_out: int = 16) -> list[str]:
        """The built-in everyday questions plus the opening questions of held-out conversations."""
        from companion.prompt import NEW_CHAT_MARKER
        from training.lora.data import read_files, split_by_hash

        probes = read_probes(DEFAULT_PROBES)
        if data.files.eval:
            examples = read_files(data.files.eval)
        else:
            examples = split_by_hash(read_files(data.files.train), 0.1, 42)[1]
        for example in examples:
            first = next((m.content for m in example.turns if m.role == "user"), None)
            if first and first != NEW_CHAT_MARKER and first not in probes and held_out > 0:
                probes.append(first)
                held_out -= 1
        return probes

    def _prompt_ids(self, tokenizer: Any, question: str) -> list[int]:
        prompt = assemble(
            self.character.card,
            [],
            question,
            user_name=self.settings.user_name,
            count_tokens=lambda text: len(tokenizer(text, add_special_tokens=False).input_ids),
            budget_tokens=self.settings.max_context_tokens - self.settings.max_new_tokens,
        )
        text = tokenizer.apply_chat_template(
            [m.model_dump() for m in prompt.messages], tokenize=False, add_generation_prompt=True
        )
        return tokenizer(text, add_special_tokens=False).input_ids

    def _probe(self, model: Any, base: Any, questions: list[str]) -> list[Probe]:
        tokenizer = base.tokenizer
        probes = [Probe(question=q, language=detect_language(q)) for q in questions]
        prompts = [self._prompt_ids(tokenizer, q) for q in questions]
        for label in ("base", "adapter"):
            started = time.perf_counter()
            self.on_status(f"{label}: replying to {len(questions)} probe questions")
            if label == "base":
                with model.disable_adapter():
                    replies = self._generate(model, tokenizer, prompts, probes)
            else:
                replies = self._generate(model, tokenizer, prompts, probes)
            for probe, reply in zip(probes, replies, strict=True):
                setattr(probe, label, reply)
            self.on_status(f"{label}: {time.perf_counter() - started:.0f}s")
        return probes

    def _generate(self, model: Any, tokenizer: Any, prompts: list[list[int]], probes: list[Probe]) -> list[Reply]:
        """One probe at a time, as chat does; the prompt prefix all probes share (persona, examples)
        is computed once and its KV cache copied for each probe."""
        import copy

        import torch
        from transformers import DynamicCache

        from companion.llm.end_aliases import generate_keywords, model_end_aliases
        from companion.llm.local import KNOWN_END_OF_TURN

        vocab = tokenizer.get_vocab()
        stop_ids = {tokenizer.eos_token_id, *(vocab[t] for t in KNOWN_END_OF_TURN if t in vocab)}
        stop_ids.discard(None)
        special = set(tokenizer.all_special_ids) | {vocab[t] for t in TEMPLATE_MARKERS if t in vocab}
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
        s = self.settings
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": s.temperature, "top_p": s.top_p}
            if s.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        # as chat samples: end-of-turn aliases merged into the end token (companion.llm.end_aliases),
        # unless her chat settings turn that off
        merge = self._chat_llm().options.get("end_aliases", True) is not False
        end, aliases = model_end_aliases(model, tokenizer, KNOWN_END_OF_TURN, enabled=merge)
        penalty = generate_keywords(end, aliases, s.repetition_penalty)
        device = next(model.parameters()).device
        shared = min(len(p) for p in prompts) - 1
        for prompt in prompts[1:]:
            shared = next((i for i in range(shared) if prompt[i] != prompts[0][i]), shared)
        replies: list[Reply] = []
        with torch.inference_mode():
            prefix_cache = DynamicCache(config=model.config)
            if shared:
                model(input_ids=torch.tensor([prompts[0][:shared]], device=device), past_key_values=prefix_cache)
            for index, (prompt, probe) in enumerate(zip(prompts, probes, strict=True)):
                ids = torch.tensor([prompt], device=device)
                torch.manual_seed(self.seed + index)
                out = model.generate(
                    input_ids=ids,
                    attention_mask=torch.ones_like(ids),
                    past_key_values=copy.deepcopy(prefix_cache),
                    max_new_tokens=self.max_new_tokens,
                    eos_token_id=sorted(stop_ids),
                    pad_token_id=pad,
                    **penalty,
                    **sampling,
                )
                replies.append(self._judge(tokenizer, out[0, len(prompt) :].tolist(), stop_ids, special, probe))
        return replies

    def _judge(self, tokenizer: Any, row: list[int], stop_ids: set, special: set, probe: Probe) -> Reply:
        stop_at = next((i for i, t in enumerate(row) if t in stop_ids), None)
        body = row[:stop_at] if stop_at is not None else row
        raw = tokenizer.decode(body, skip_special_tokens=False)
        text = tokenizer.decode(body, skip_special_tokens=True).strip()
        leaked = sorted({tokenizer.convert_ids_to_tokens(t) for t in body if t in special})
        leaked += [m for m in TEMPLATE_MARKERS if m in raw and m not in leaked]
        if re.search(r"(^|\n)\s*(user|model)\s*\n", raw):
            leaked.append("role header")
        language = detect_language(text)
        return Reply(
            text=text,
            tokens=len(body),
            clean_end=stop_at is not None and bool(text),
            leaked=leaked,
            language=language,
            language_ok=language == probe.language,
        )

    # -- verdict ---------------------------------------------------------------------------
    @staticmethod
    def _goals(result: EvalResult) -> dict[str, Any]:
        goals: dict[str, Any] = {}
        if "lines_perplexity_reduction" in result.perplexity:
            value = result.perplexity["lines_perplexity_reduction"]
            goals["lines_perplexity_reduction"] = {
                "value": value,
                "goal": GOAL_PERPLEXITY_REDUCTION,
                "met": value >= GOAL_PERPLEXITY_REDUCTION,
            }
        if result.format.get("adapter"):
            value = result.format["adapter"]["clean_end_and_language"]
            goals["clean_end_and_language"] = {"value": value, "goal": GOAL_FORMAT, "met": value >= GOAL_FORMAT}
        return goals


def evaluate(character: Character, settings: Settings, **kwargs: Any) -> EvalResult:
    options = {k: kwargs.pop(k) for k in ("perplexity", "generate") if k in kwargs}
    return Evaluator(character, settings, **kwargs).run(**options)


# -- reports -----------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def _cell(text: str, limit: int = 220) -> str:
    text = text.replace("|", "\\|").replace("\n", "<br>")
    return text if len(text) <= limit else text[:limit] + "…"


def render_markdown(result: EvalResult, *, samples: int = 12) -> str:
    lines = [f"# Evaluation: {result.character}, base vs adapter", ""]
    lines += [
        f"Base model `{result.base_model}`, adapter `{result.adapter_dir}`. Replies sampled as in chat "
        f"(temperature {result.settings['temperature']}, top-p {result.settings['top_p']}, repetition penalty "
        f"{result.settings['repetition_penalty']}, up to {result.settings['max_new_tokens']} tokens, seed "
        f"{result.settings['seed']}, {result.settings['precision']}).",
        "",
        "| goal | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, goal in result.goals.items():
        lines.append(
            f"| {name.replace('_', ' ')} | {_pct(goal['value'])} | >= {_pct(goal['goal'])} | "
            f"{'yes' if goal['met'] else 'no'} |"
        )
    ppl = result.perplexity
    if "base" in ppl:
        b, a = ppl["base"], ppl["adapter"]
        lines += [
            "",
            f"## Held-out perplexity ({ppl['samples']} conversations, {a['line_tokens']} tokens of her lines)",
            "",
            "| | base | adapter | change |",
            "|---|---|---|---|",
            f"| perplexity of her lines | {b['lines_perplexity']:.2f} | {a['lines_perplexity']:.2f} | "
            f"{-ppl['lines_perplexity_reduction']:+.0%} |",
            f"| loss incl. end-of-turn (what training minimises) | {b['loss']:.3f} | {a['loss']:.3f} | "
            f"{a['loss'] - b['loss']:+.3f} |",
        ]
    elif ppl.get("note"):
        lines += ["", f"Held-out perplexity: {ppl['note']}."]
    if result.format:
        fb, fa = result.format["base"], result.format["adapter"]
        lines += [
            "",
            f"## Format health ({fa['replies']} probe questions)",
            "",
            "| | base | adapter |",
            "|---|---|---|",
            f"| ends cleanly (end-of-turn token) | {_pct(fb['clean_end'])} | {_pct(fa['clean_end'])} |",
            f"| no template / special-token leakage | {_pct(fb['no_leak'])} | {_pct(fa['no_leak'])} |",
            f"| reply in the question's language | {_pct(fb['language_match'])} | {_pct(fa['language_match'])} |",
            f"| ends cleanly and in the question's language | {_pct(fb['clean_end_and_language'])} | "
            f"{_pct(fa['clean_end_and_language'])} |",
            f"| all of the above | {_pct(fb['healthy'])} | {_pct(fa['healthy'])} |",
            f"| mean reply length (tokens) | {fb['mean_tokens']:.0f} | {fa['mean_tokens']:.0f} |",
        ]
        failures = [p for p in result.probes if p.adapter and not p.adapter.healthy]
        if failures:
            lines += ["", "Adapter replies that failed a check:", ""]
            for p in failures:
                r = p.adapter
                assert r is not None
                why = [
                    w
                    for w, bad in (("no clean end", not r.clean_end), ("language " + r.language, not r.language_ok))
                    if bad
                ]
                why += [f"leaked {', '.join(r.leaked)}"] if r.leaked else []
                lines.append(f"- {_cell(p.question, 60)} -> {_cell(r.text, 120)} ({'; '.join(why)})")
        lines += ["", "## Side by side", "", "| question | base | adapter |", "|---|---|---|"]
        for p in result.probes[:samples]:
            lines.append(
                f"| {_cell(p.question, 80)} | {_cell(p.base.text if p.base else '')} | "
                f"{_cell(p.adapter.text if p.adapter else '')} |"
            )
    if result.notes:
        lines += ["", "Notes:", *[f"- {note}" for note in result.notes]]
    lines.append("")
    return "\n".join(lines)


def write_reports(result: EvalResult, folder: Path) -> tuple[Path, Path]:
    md, js = folder / "eval.md", folder / "eval.json"
    atomic.write_text(md, render_markdown(result))
    atomic.write_text(js, json.dumps(result.as_dict(), indent=1, ensure_ascii=False))
    return md, js
