"""Building and searching a character's index with the real embedder and a real chromadb."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from knowledge.index import BuildCancelled, CorpusSource, KnowledgeIndex
from knowledge.settings import KnowledgeSettings


def make_index(character, e5, store, tmp_path: Path, **settings) -> KnowledgeIndex:
    return KnowledgeIndex(
        CorpusSource.from_character(character),
        e5,
        store,
        KnowledgeSettings(**settings),
        cache_dir=tmp_path / "data" / "knowledge" / character.id,
    )


def test_build_is_idempotent_and_follows_the_corpus(character, e5, store, tmp_path: Path) -> None:
    index = make_index(character, e5, store, tmp_path)
    first = index.build()
    assert sorted(first.indexed) == ["dialogues/chat.jsonl", "lore/cat.md", "lore/town.md", "scenes/till.txt"]
    assert first.totals["lore"] >= 4 and first.totals["line"] == 4  # 2 scene exchanges + 2 dialogue pairs
    assert any("chat.jsonl" in w and "line 3" in w for w in first.warnings)  # the non-JSON line is named
    assert first.speakers[:2] == ["小麦", "Xiaomai"]

    again = make_index(character, e5, store, tmp_path).build()  # a new process would see the same
    assert again.indexed == [] and again.unchanged == 4 and again.chunks_added == 0 and again.totals == first.totals

    corpus = character.corpus_dir
    (corpus / "lore" / "town.md").write_text("# 白沙镇\n\n白沙镇的灯塔是蓝色的。\n", encoding="utf-8")
    (corpus / "scenes" / "till.txt").unlink()
    changed = index.build()
    assert changed.indexed == ["lore/town.md"] and changed.removed == ["scenes/till.txt"]
    assert changed.totals["line"] == 2
    hits = index.search("灯塔是什么颜色？", kind="lore", k=1)
    assert "蓝色" in hits[0].text and hits[0].source == "lore/town.md:3"
    assert not any("红色的灯塔" in h.text for h in index.search("红色的灯塔", kind="lore", k=10))


def test_bad_files_are_skipped_with_a_warning_naming_them(character, e5, store, tmp_path: Path, caplog) -> None:
    corpus = character.corpus_dir
    (corpus / "lore" / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (corpus / "lore" / "gbk.txt").write_bytes("芝士的生日是十月一日，那天店里送红豆包。".encode("gbk"))
    (corpus / "lore" / "utf16.txt").write_bytes("芝士最讨厌洗澡。".encode("utf-16"))
    (corpus / ".hidden").write_text("ignored", encoding="utf-8")
    report = make_index(character, e5, store, tmp_path).build()
    assert report.skipped == [("lore/photo.png", "binary file (contains NUL bytes)")]
    assert any(str(corpus / "lore" / "photo.png") in record.getMessage() for record in caplog.records)
    index = make_index(character, e5, store, tmp_path)
    assert "十月一日" in index.search("芝士的生日是哪天", kind="lore", k=1)[0].text
    assert (
        "洗澡"
        in index.search("芝士讨厌什么", kind="lore", k=2)[0].text
        + index.search("芝士讨厌什么", kind="lore", k=2)[1].text
    )
    # the skipped file is remembered and reported again without being re-read
    assert make_index(character, e5, store, tmp_path).build().skipped == report.skipped


def test_hybrid_search_ranks_and_sources(character, e5, store, tmp_path: Path) -> None:
    index = make_index(character, e5, store, tmp_path)
    index.build()
    hits = index.search("芝士最怕什么？", kind="lore", k=3)
    assert "吸尘器" in hits[0].text
    assert hits[0].dense_rank is not None and hits[0].lexical_rank is not None and hits[0].cosine > 0.8
    assert hits[0].source.startswith("lore/cat.md:")
    lines = index.search("芝士为什么在收银台上睡觉", kind="line", k=1)
    assert lines[0].text.endswith("小麦:「因为我是芝士的律师！」") and lines[0].source == "scenes/till.txt:1-4"
    english = index.search("who keeps the lighthouse?", kind="lore", k=1)
    assert "Old Zhou" in english[0].text
    dense = index.search("芝士最怕什么？", kind="lore", k=3, mode="dense")
    assert all(h.lexical_rank is None for h in dense)
    bm25 = index.search("芝士最怕什么？", kind="lore", k=3, mode="lexical")
    assert bm25 and all(h.dense_rank is None and h.cosine is not None for h in bm25)
    assert "吸尘器" in bm25[0].text


def test_corrupt_database_is_detected_and_rebuilt(character, e5, store, tmp_path: Path) -> None:
    from knowledge.store import ChromaStore

    make_index(character, e5, store, tmp_path).build()
    folder = store.namespace(f"knowledge/{character.id}").local_dir
    store.release_client(folder)
    (folder / "chroma.sqlite3").write_bytes(b"this is not a database" * 100)
    fresh = ChromaStore(context=store_context(tmp_path))
    report = make_index(character, e5, fresh, tmp_path).build()
    assert report.rebuilt_corrupt and report.totals["lore"] >= 4
    assert any("damaged" in w for w in report.warnings)
    assert list(folder.parent.glob("chroma.corrupt-*"))  # the damaged copy is kept aside, once
    assert (character.corpus_dir / "lore" / "cat.md").read_text(encoding="utf-8").startswith("# 芝士")


def test_one_vector_the_approximate_index_misses_is_not_damage(character, e5, store, tmp_path: Path) -> None:
    """HNSW misses about 1 stored vector in 50-100 at 100k chunks; that must not trigger a rebuild.
    A miss looks like a probe with no stored vector at distance ~0: the negation of a stored one."""
    index = make_index(character, e5, store, tmp_path)
    index.build()
    assert index.verify() is None
    lore = store.namespace(f"knowledge/{character.id}").find(f"{e5.key}-lore")
    count = lore.count()
    vectors = [r.embedding for r in lore.get(documents=False, embeddings=True, limit=5)]
    assert len(vectors) >= 3
    half = (len(vectors) + 1) // 2
    assert KnowledgeIndex._mostly_found(lore, vectors, count)
    assert KnowledgeIndex._mostly_found(lore, [-vectors[0], *vectors[1:]], count)  # one missed
    assert not KnowledgeIndex._mostly_found(lore, [-v for v in vectors[:half]] + vectors[half:], count)
    assert not KnowledgeIndex._mostly_found(lore, [], count)


def test_index_out_of_step_with_its_manifest_is_rebuilt(character, e5, store, tmp_path: Path) -> None:
    index = make_index(character, e5, store, tmp_path)
    index.build()
    lore = store.namespace(f"knowledge/{character.id}").find(f"{e5.key}-lore")
    lore.delete(ids=[lore.get(limit=1)[0].id])  # rows lost behind the manifest's back
    fresh = make_index(character, e5, store, tmp_path)
    assert "manifest" in (fresh.verify() or "")
    report = fresh.build()
    assert report.rebuilt_corrupt and fresh.verify() is None
    assert "吸尘器" in fresh.search("芝士最怕什么？", kind="lore", k=1)[0].text


def test_cancelled_build_resumes(character, e5, store, tmp_path: Path) -> None:
    cancel = threading.Event()
    seen = []

    def progress(p) -> None:
        seen.append(p.files_done)
        if p.files_done >= 1:
            cancel.set()

    index = make_index(character, e5, store, tmp_path, embed_batch=1)
    with pytest.raises(BuildCancelled):
        index.build(progress=progress, cancel=cancel)
    report = make_index(character, e5, store, tmp_path).build()
    assert 1 <= len(report.indexed) < 4 and report.unchanged >= 1
    full = make_index(character, e5, store, tmp_path)
    assert full.verify() is None
    assert full.build().totals == make_index(character, e5, store, tmp_path).build(force=True).totals


def test_settings_change_rechunks(character, e5, store, tmp_path: Path) -> None:
    make_index(character, e5, store, tmp_path).build()
    smaller = make_index(character, e5, store, tmp_path, chunk_tokens=24).build()
    assert len(smaller.indexed) == 4 and smaller.totals["lore"] > 4


def test_include_patterns_pick_files(character, e5, store, tmp_path: Path) -> None:
    source = CorpusSource("only-cat", character.corpus_dir, include=("lore/cat.*",))
    report = KnowledgeIndex(source, e5, store, cache_dir=tmp_path / "c").build()
    assert report.indexed == ["lore/cat.md"] and report.totals["line"] == 0


def test_speaker_found_when_the_card_name_is_not_used(tmp_path: Path, e5, store) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = ["阿虚:「去哪？」", "春日:「跟我来！」", "阿虚:「好吧」", "春日:「快点！」", "春日:「阿虚！」"]
    (corpus / "s.txt").write_text("\n".join(lines), encoding="utf-8")
    index = KnowledgeIndex(CorpusSource("x", corpus, ("Suzumiya",)), e5, store, cache_dir=tmp_path / "c")
    report = index.build()
    assert report.speakers == ["Suzumiya", "春日"] and any("春日" in w for w in report.warnings)
    assert index.count("line") == 1  # one exchange: her turns with 阿虚's lines before them


def store_context(tmp_path: Path):
    from companion.plugins import PluginContext

    return PluginContext(data_dir=tmp_path / "data")
