"""End-of-turn aliases (companion.llm.end_aliases): the arithmetic on a small matrix, then the real
embedded Gemma-3-270M on both backends."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from companion.llm.base import GenerationParams
from companion.llm.end_aliases import THRESHOLD, find_end_aliases, gguf_end_aliases, merge_into_end
from companion.messages import ChatMessage


def test_aliases_are_the_near_duplicates_and_take_their_mass_to_the_end_token() -> None:
    rng = np.random.default_rng(0)
    end = 3
    embeddings = rng.normal(size=(12, 8)).astype(np.float32)
    embeddings[end] = np.ones(8, dtype=np.float32)
    for i, noise in ((5, 0.01), (7, 0.05), (10, 0.1)):  # a cluster around the end row, any scale
        embeddings[i] = (embeddings[end] + noise * rng.normal(size=8)) * (i / 4)
    embeddings[8] = -embeddings[end]  # opposite: not an alias
    assert find_end_aliases(embeddings, end).tolist() == [5, 7, 10]
    assert find_end_aliases(embeddings, end, threshold=0.99999).tolist() == []

    logits = np.array([1.0, 2.0, 0.5, -1.0, 0.0, 3.0, -2.0, 1.5, 0.0, 0.0, 2.5, 1.0], dtype=np.float32)
    before = np.exp(logits) / np.exp(logits).sum()
    out = merge_into_end(logits, end, np.array([5, 7, 10]))
    assert out is logits  # in place
    assert np.isneginf(logits[[5, 7, 10]]).all()
    after = np.exp(logits) / np.exp(logits).sum()
    assert after[end] == pytest.approx(before[[end, 5, 7, 10]].sum(), rel=1e-6)
    others = [0, 1, 2, 4, 6, 8, 9, 11]
    np.testing.assert_allclose(after[others], before[others], rtol=1e-6)
    unchanged = logits.copy()
    merge_into_end(logits, end, np.zeros(0, dtype=np.int64))
    np.testing.assert_array_equal(logits, unchanged)


def test_the_torch_processor_is_the_same_arithmetic() -> None:
    import torch

    from companion.llm.end_aliases import EndAliasProcessor

    row = np.linspace(-3, 3, 20, dtype=np.float32)
    aliases = np.array([2, 9, 17])
    got = EndAliasProcessor(4, aliases)(None, torch.tensor(row)[None])[0].numpy()
    np.testing.assert_allclose(got, merge_into_end(row.copy(), 4, aliases), rtol=1e-6)


@pytest.fixture(scope="module")
def gguf_aliases(fast_llm, model_data_dir: Path) -> np.ndarray:
    """The embedded GGUF's aliases of <end_of_turn>, as the fast backend loaded them."""
    engine = fast_llm.engine
    cache = model_data_dir / "models" / "end-aliases" / f"{engine.fingerprint}-{engine.end_id}.json"
    assert cache.is_file()  # computed once per model file
    cached = gguf_end_aliases(engine.path, engine.end_id, cache.parent, engine.fingerprint)
    np.testing.assert_array_equal(cached, engine.end_aliases)
    return engine.end_aliases


def test_embedded_gemma_aliases_are_its_untrained_rows(gguf_aliases: np.ndarray, local_llm) -> None:
    """Measured: 6,442 rows have cosine > 0.9 to <end_of_turn>'s (unused and glitch tokens)."""
    tokenizer = local_llm.tokenizer
    assert tokenizer.convert_ids_to_tokens(106) == "<end_of_turn>"
    assert 3000 < len(gguf_aliases) < 10000, len(gguf_aliases)
    names = set(tokenizer.convert_ids_to_tokens(gguf_aliases.tolist()))
    assert "<unused1354>" in names
    assert sum(name.startswith("<unused") for name in names) > 1000
    # (<start_of_turn>, <pad> and <unk> are untrained too, and aliases: all the better)
    for common in ("the", "▁the", "我", "\n", "<eos>", "<end_of_turn>"):
        assert tokenizer.convert_tokens_to_ids(common) not in set(gguf_aliases.tolist()), common


def test_both_backends_find_the_same_aliases(fast_llm, local_llm, gguf_aliases: np.ndarray) -> None:
    """llama.cpp reads the GGUF's Q8_0 rows, the reference its bfloat16 copy of them: the same set,
    but for rows whose cosine sits on the threshold (measured: one, <unused875>, at 0.9000)."""
    engine = fast_llm.engine
    assert engine.end_id == 106
    end, reference = local_llm.end_aliases()
    assert end == 106
    differ = sorted(set(reference.tolist()) ^ set(engine.end_aliases.tolist()))
    assert len(differ) <= 5, differ
    weight = local_llm.model.get_input_embeddings().weight.detach().float()
    cosine = (weight[differ] @ weight[end]) / (weight[differ].norm(dim=1) * weight[end].norm())
    assert (abs(cosine - THRESHOLD) < 0.005).all(), cosine


def test_sampling_never_emits_an_alias(fast_llm) -> None:
    """The logits the sampler sees: aliases at -inf, the end token holding their mass."""
    engine = fast_llm.engine
    tokens, _ = fast_llm.prompt_tokens([ChatMessage(role="user", content="Hi!")])
    engine.set_adapter(None)
    fast_llm._compute.run(engine.prepare, tokens)  # the engine evaluates on its compute thread only
    raw = engine.last_logits().astype(np.float64)
    with engine.sampler(GenerationParams(max_new_tokens=1, temperature=0.0, repetition_penalty=1.0), tokens) as sample:
        sample()
    merged = engine.last_logits()
    assert np.isneginf(merged[engine.end_aliases]).all()
    expected = np.logaddexp.reduce(raw[[engine.end_id, *engine.end_aliases]])
    assert merged[engine.end_id] == pytest.approx(expected, rel=1e-5)
