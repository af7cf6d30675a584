"""End-of-turn aliases: output rows the model cannot tell apart from the end-of-turn marker's.

Why: the embedded dialogue model is the Gemma-3-270M *base* model. Its `<end_of_turn>` token (id
106) was never trained, so its embedding row (which is also its output row: the head is tied to
the input embeddings, and frozen during LoRA training) is nearly identical to ~6,400 other
untrained rows: `<unusedN>` tokens and glitch tokens such as `DrvGPIO`, `assignmentItems` or
`▁Букмекердик` (cosine > 0.9 to row 106 for 6,442 rows, > 0.99 for dozens). A character's LoRA
adapter learns *where* a reply ends: at the true end of held-out replies it puts 78% of the
probability on that cluster, but only 0.5% on `<end_of_turn>` itself, since it cannot separate
the rows. Generation then samples a junk token where the reply should stop and rambles on (7.5%
of probe replies ended cleanly).

The correction, at every sampling step, on the raw logits (before repetition penalty and
temperature): tokens whose rows are indistinguishable from the end marker's are never emitted,
and their probability goes to the end marker:

    logits[end] = logsumexp(logits[[end] + aliases]);  logits[aliases] = -inf

For an instruct model whose end-of-turn row is trained and distinct (SmolLM2's `<|im_end|>`) the
alias set is empty or tiny and nothing changes. Both backends use this module: llama.cpp
(`llm.llamacpp`, aliases from the GGUF's `token_embd.weight`, cached per model file), the
transformers reference (`llm.local`) and `companion eval` (a `LogitsProcessor`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from companion import atomic

log = logging.getLogger(__name__)
THRESHOLD = 0.9
_CHUNK_ROWS = 16384  # 16384 x 640 float32 = 40 MB at a time


def find_end_aliases(embeddings: Any, end_id: int, threshold: float = THRESHOLD) -> np.ndarray:
    """Ids (int64, ascending) whose rows have cosine similarity > `threshold` to row `end_id`,
    excluding `end_id`. `embeddings` is any 2-D array-like (numpy, or a torch tensor); it is read
    in float32, in chunks of rows."""
    end_row = _float32(embeddings[end_id : end_id + 1])[0]
    return _aliases(_row_chunks(embeddings), end_row, end_id, threshold)


def merge_into_end(logits: np.ndarray, end_id: int, aliases: np.ndarray) -> np.ndarray:
    """In place on a 1-D float32 logits row: the end token takes the aliases' probability
    (logsumexp), the aliases get -inf. Returns `logits`."""
    if len(aliases):
        merged = np.logaddexp.reduce(logits[aliases], initial=logits[end_id])
        logits[end_id] = merged
        logits[aliases] = -np.inf
    return logits


def _float32(rows: Any) -> np.ndarray:
    if hasattr(rows, "detach"):  # torch
        rows = rows.detach().float().cpu().numpy()
    return np.asarray(rows, dtype=np.float32)


def _row_chunks(embeddings: Any) -> Iterator[np.ndarray]:
    for start in range(0, embeddings.shape[0], _CHUNK_ROWS):
        yield _float32(embeddings[start : start + _CHUNK_ROWS])


def _aliases(chunks: Iterable[np.ndarray], end_row: np.ndarray, end_id: int, threshold: float) -> np.ndarray:
    end_unit = end_row / max(float(np.linalg.norm(end_row)), 1e-12)
    found: list[np.ndarray] = []
    start = 0
    for chunk in chunks:
        norms = np.maximum(np.linalg.norm(chunk, axis=1), 1e-12)
        cosine = (chunk @ end_unit) / norms
        found.append(np.flatnonzero(cosine > threshold) + start)
        start += len(chunk)
    ids = np.concatenate(found).astype(np.int64) if found else np.zeros(0, dtype=np.int64)
    return ids[ids != end_id]


# -- llama.cpp: aliases from the GGUF, cached per model file --------------------------------------
def gguf_end_aliases(path: Path, end_id: int, cache_dir: Path, fingerprint: str) -> np.ndarray:
    """The aliases of `end_id` in a GGUF model (from `token_embd.weight`), computed once per model
    file and cached as `<cache_dir>/<fingerprint>-<end_id>.json` (written atomically)."""
    cache = cache_dir / f"{fingerprint}-{end_id}.json"
    try:
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("threshold") == THRESHOLD:
            return np.asarray(saved["aliases"], dtype=np.int64)
    except (OSError, ValueError, KeyError, AttributeError):
        pass
    aliases = _gguf_aliases(path, end_id)
    record = {"model": path.name, "end_id": end_id, "threshold": THRESHOLD, "aliases": aliases.tolist()}
    atomic.write_text(cache, json.dumps(record))
    return aliases


def _gguf_aliases(path: Path, end_id: int) -> np.ndarray:
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(path)
    tensor = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    if tensor is None:
        raise ValueError(f"{path} has no token_embd.weight")
    raw = tensor.data  # one (possibly quantized) row per token

    def rows(start: int, stop: int) -> np.ndarray:
        return dequantize(raw[start:stop], tensor.tensor_type).astype(np.float32, copy=False)

    end_row = rows(end_id, end_id + 1)[0]
    chunks = (rows(s, s + _CHUNK_ROWS) for s in range(0, raw.shape[0], _CHUNK_ROWS))
    return _aliases(chunks, end_row, end_id, THRESHOLD)


# -- transformers --------------------------------------------------------------------------------
def model_end_aliases(
    model: Any, tokenizer: Any, known_end_of_turn: Sequence[str], *, enabled: bool = True
) -> tuple[int | None, np.ndarray]:
    """(end-of-turn id, its aliases) for a transformers (or peft) model: the end id is the first
    known end-of-turn token in the vocabulary, else eos; no aliases when `enabled` is off."""
    vocab = tokenizer.get_vocab()
    end = next((vocab[t] for t in known_end_of_turn if t in vocab), tokenizer.eos_token_id)
    if not enabled or end is None:
        return end, np.zeros(0, dtype=np.int64)
    return end, find_end_aliases(model.get_input_embeddings().weight, end)


def generate_keywords(end_id: int | None, aliases: np.ndarray, repetition_penalty: float | None) -> dict[str, Any]:
    """Keywords for transformers' generate() that merge the aliases into the end token on the raw
    logits, before the repetition penalty (as the llama.cpp path does). generate() would put a
    custom processor after its own repetition penalty, so the penalty comes along here instead."""
    from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

    if end_id is None or not len(aliases):
        return {"repetition_penalty": repetition_penalty}
    processors: list[Any] = [EndAliasProcessor(end_id, aliases)]
    if repetition_penalty is not None and repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    return {"logits_processor": LogitsProcessorList(processors), "repetition_penalty": None}


class EndAliasProcessor:
    """`merge_into_end` as a transformers LogitsProcessor (batched torch scores)."""

    def __init__(self, end_id: int, aliases: np.ndarray) -> None:
        self.end_id = end_id
        self.aliases = np.asarray(aliases, dtype=np.int64)
        self._index: Any = None

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self._index is None or self._index.device != scores.device:
            self._index = torch.as_tensor(self.aliases, device=scores.device)
        merged = torch.logsumexp(torch.cat([scores[:, self.end_id : self.end_id + 1], scores[:, self._index]], 1), 1)
        scores = scores.clone()
        scores[:, self.end_id] = merged
        scores[:, self._index] = -float("inf")
        return scores
