"""Per-user memory: what is kept, recall across sessions, isolation between users, forgetting."""

from __future__ import annotations

from pathlib import Path

import pytest

from companion.plugins import PluginContext
from knowledge.memory import MemoryStore, extract, render
from knowledge.store import ChromaStore


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("我叫小林，我最喜欢吃草莓蛋糕。", ["{{user}}'s name is 小林", "我叫小林，我最喜欢吃草莓蛋糕。"]),
        (
            "My name is Sam. I work as a nurse at night.",
            ["{{user}}'s name is Sam", "My name is Sam.", "I work as a nurse at night."],
        ),
        ("叫我阿伟就行", ["{{user}}'s name is 阿伟", "叫我阿伟就行"]),
        ("你喜欢什么颜色？", []),
        ("Call me later, I'm busy.", ["Call me later, I'm busy."]),  # no name in it
        ("我叫了外卖，我等会儿再来。", ["我叫了外卖，我等会儿再来。"]),
        ("你叫我干嘛", []),
        ("你好呀", []),
        ("Do you like cats?", []),
        ("我也是", []),
        ("今天天气真好。我下个月要去东京出差！", ["我下个月要去东京出差！"]),
    ],
)
def test_extract(text: str, kept: list[str]) -> None:
    assert [t for _, t, _ in extract(text)] == kept


def test_ids_are_stable_so_repeats_do_not_pile_up() -> None:
    assert extract("我怕打雷。")[0][0] == extract("我怕打雷。")[0][0]


def test_a_sentence_said_twice_in_one_message_is_stored_once(memory: MemoryStore) -> None:
    # the store refuses duplicate ids in one write, and the whole turn's memories were lost
    assert memory.remember("u1", "我怕打雷。我怕打雷。我养了一只猫。") == ["我怕打雷。", "我养了一只猫。"]
    assert sorted(m["text"] for m in memory.export("u1")["memories"]) == sorted(["我怕打雷。", "我养了一只猫。"])


@pytest.fixture
def memory(tmp_path: Path, e5) -> MemoryStore:
    return MemoryStore("mochi", e5, ChromaStore(context=PluginContext(data_dir=tmp_path / "data")))


def test_recall_in_a_later_session_and_never_across_users(memory: MemoryStore, tmp_path: Path, e5) -> None:
    memory.remember("alice", "我叫小林。我最喜欢吃草莓蛋糕。我养了一只叫豆豆的柯基。", "记住啦！", now=1_700_000_000)
    memory.remember("alice", "我下个月要去东京出差。")
    memory.remember("bob", "My sister is getting married in June. I'm afraid of thunderstorms.")

    later = MemoryStore("mochi", e5, ChromaStore(context=PluginContext(data_dir=tmp_path / "data")))
    alice = later.recall("alice", "你还记得我喜欢吃什么吗？", k=3)
    texts = [m.text for m in alice]
    assert texts[0] == "{{user}}'s name is 小林"  # profile facts always come first
    assert "我最喜欢吃草莓蛋糕。" in texts
    assert not any("married" in t or "thunder" in t for t in texts)
    assert [m.text for m in later.recall("alice", "do you remember my dog?", k=2)][1] == "我养了一只叫豆豆的柯基。"

    bob = later.recall("bob", "who is getting married?", k=3)
    assert [m.text for m in bob] == ["My sister is getting married in June."]
    cross = later.recall("bob", "草莓蛋糕 豆豆 小林 东京", k=10)  # alice's words, asked as bob
    assert all(not any(w in m.text for w in ("草莓", "豆豆", "小林", "东京")) for m in cross)
    assert later.recall("carol", "anything", k=5) == []
    assert later.recall("alice", "hi", k=4)[1:] == []  # small talk recalls facts only

    lines = render(alice)
    assert lines[0] == "{{user}}'s name is 小林" and lines[1].startswith("[2023-11-1") and "{{user}}: 我" in lines[1]


def test_export_forget_and_list(memory: MemoryStore) -> None:
    memory.remember("qq:12345", "I love strawberry cake.", "Noted!")
    memory.remember("discord:67890", "我怕打雷。")
    users = {row["user_id"]: row["memories"] for row in memory.users()}
    assert users == {"qq:12345": 1, "discord:67890": 1}
    exported = memory.export("qq:12345")
    assert exported["user_id"] == "qq:12345" and exported["memories"][0]["text"] == "I love strawberry cake."
    assert exported["memories"][0]["reply"] == "Noted!"
    assert memory.forget("qq:12345") == 1
    assert memory.recall("qq:12345", "cake", k=3) == [] and memory.export("qq:12345")["memories"] == []
    assert memory.forget("qq:12345") == 0
    assert [row["user_id"] for row in memory.users()] == ["discord:67890"]


def test_memories_survive_an_embedder_change(memory: MemoryStore, tmp_path: Path, minilm) -> None:
    memory.remember("alice", "I love strawberry cake.")
    switched = MemoryStore("mochi", minilm, ChromaStore(context=PluginContext(data_dir=tmp_path / "data")))
    recalled = switched.recall("alice", "any dessert ideas?", k=2)
    assert [m.text for m in recalled] == ["I love strawberry cake."]


def test_oldest_memories_go_first_past_the_cap(tmp_path: Path, e5) -> None:
    memory = MemoryStore("mochi", e5, ChromaStore(context=PluginContext(data_dir=tmp_path / "d")), max_items=3)
    memory.remember("alice", "My name is Alice.", now=1)
    for day, text in enumerate(["I like tea.", "I have a dog.", "I play the piano.", "I live by the sea."], 2):
        memory.remember("alice", text, now=day)
    kept = [m["text"] for m in memory.export("alice")["memories"]]
    assert "{{user}}'s name is Alice" in kept and "I live by the sea." in kept
    assert "My name is Alice." not in kept and "I like tea." not in kept and len(kept) == 3
