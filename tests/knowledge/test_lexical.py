"""BM25 terms: jieba for Chinese, stems for English; the saved index and its fingerprint."""

from __future__ import annotations

from pathlib import Path

from knowledge.lexical import LexicalIndex, tokenize


def test_terms_for_chinese_and_english() -> None:
    assert tokenize("为什么外婆的烤箱叫老黄？") == ["什么", "为什么", "外婆", "烤箱", "叫", "老", "黄"]
    assert tokenize("The rebels RETREATED to Mount Vesuvius!") == ["rebel", "retreat", "mount", "vesuvius"]
    assert tokenize("Who was your first wife?") == ["first", "wife"]  # question words and pronouns are stop words
    assert tokenize("，。！？ ... ---") == []
    assert "sos" in tokenize("ＳＯＳ团")  # full-width letters are normalised


def test_search_save_and_load(tmp_path: Path) -> None:
    docs = {"a": "芝麻是一只黑猫，最怕吸尘器。", "b": "灯塔每五秒闪一次。", "c": "The lighthouse keeper retreated."}
    index = LexicalIndex.build(list(docs), list(docs.values()))
    assert [cid for cid, _ in index.search(tokenize("芝麻怕什么"), 3)] == ["a"]
    assert [cid for cid, _ in index.search(tokenize("who retreats?"), 3)] == ["c"]
    assert index.search(tokenize("完全无关的词语"), 3) == []
    index.save(tmp_path / "bm25", "fp1")
    assert LexicalIndex.load(tmp_path / "bm25", "other") is None  # built from other chunks: ignored
    loaded = LexicalIndex.load(tmp_path / "bm25", "fp1")
    assert loaded is not None and [cid for cid, _ in loaded.search(tokenize("灯塔"), 3)] == ["b"]
    (tmp_path / "bm25" / "index.json").write_text("{broken", encoding="utf-8")
    assert LexicalIndex.load(tmp_path / "bm25", "fp1") is None  # a damaged cache is rebuilt, never fatal
    empty = LexicalIndex.build([], [])
    assert empty.search(["x"], 3) == [] and len(empty) == 0
