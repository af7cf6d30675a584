"""Real outside corpora (../shared/testdata): ChatHaruhi scenes and a Character-LLM profile."""

from __future__ import annotations

from pathlib import Path

import pytest

from knowledge.index import CorpusSource, KnowledgeIndex

pytestmark = pytest.mark.testdata


def test_chatharuhi_scenes_give_her_lines(testdata: Path, e5, store, tmp_path: Path) -> None:
    texts = testdata / "chatharuhi" / "hutao" / "texts"
    source = CorpusSource("hutao", texts, speakers=("胡桃",), include=("初次见面*", "人们都害怕*", "——且慢*", "下雨*"))
    index = KnowledgeIndex(source, e5, store, cache_dir=tmp_path / "cache")
    report = index.build()
    assert len(report.indexed) == 4 and report.totals["line"] >= 4 and report.totals["lore"] == 0
    hit = index.search("请问你是谁？", kind="line", k=3)
    assert any("往生堂第七十七代堂主" in h.text for h in hit)
    assert all("胡桃" in h.metadata.get("speakers", "") for h in hit)
    ghost = index.search("幽灵会伤害普通人吗？", kind="line", k=3)
    assert any("幽灵" in h.text for h in ghost)


def test_character_llm_profile_answers_questions(testdata: Path, e5, store, tmp_path: Path) -> None:
    source = CorpusSource("spartacus", testdata / "character_llm" / "profiles", include=("wiki_Spartacus.txt",))
    index = KnowledgeIndex(source, e5, store, cache_dir=tmp_path / "cache")
    assert index.build().totals["lore"] > 10
    assert "Vesuvius" in " ".join(
        h.text for h in index.search("After you escaped from the gladiator school, where did you go?", kind="lore", k=3)
    )
    assert "Capua" in " ".join(h.text for h in index.search("Where were you trained to fight?", kind="lore", k=3))
    # a question in Chinese finds the English profile (multilingual embedder)
    assert "Crassus" in " ".join(h.text for h in index.search("元老院派谁来镇压你的起义？", kind="lore", k=3))
