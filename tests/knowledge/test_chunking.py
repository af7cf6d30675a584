"""Chunkers: paragraphs and headings, scenes of classic lines, dialogue datasets."""

from __future__ import annotations

import itertools
import json

from knowledge.chunking import (
    DialogueStats,
    SpeakerMatcher,
    chunk_dialogues,
    chunk_lore,
    chunk_scenes,
    looks_like_scene,
    parse_speech,
    split_sentences,
)


def chars(text: str) -> int:
    return len(text)


def test_lore_keeps_headings_and_never_crosses_them() -> None:
    lines = [
        "# Sesame",
        "Sesame is a black cat.",
        "",
        "He has golden eyes.",
        "## Habits",
        "He sleeps by the oven.",
    ]
    chunks = list(chunk_lore(lines, count=chars, max_tokens=200))
    assert [c.text for c in chunks] == [
        "Sesame\nSesame is a black cat.\nHe has golden eyes.",
        "Sesame > Habits\nHe sleeps by the oven.",
    ]
    assert (chunks[0].line_start, chunks[0].line_end) == (2, 4)
    assert chunks[1].heading == "Sesame > Habits" and chunks[1].line_start == 6


def test_long_paragraph_splits_at_sentences_with_overlap() -> None:
    sentences = [f"第{i}句话讲的是糯米的一件小事。" for i in range(30)]
    chunks = list(chunk_lore(["".join(sentences)], count=chars, max_tokens=60, overlap=1))
    assert len(chunks) > 5
    assert all(len(c.text) <= 60 for c in chunks)
    for previous, current in itertools.pairwise(chunks):
        last = split_sentences(previous.text)[-1]
        assert current.text.startswith(last)  # one sentence of overlap
    assert chunks[0].text.startswith("第0句") and chunks[-1].text.endswith("第29句话讲的是糯米的一件小事。")


def test_list_items_keep_their_lines_when_split() -> None:
    items = [f"- item {i}: something about the bakery." for i in range(12)]
    chunks = list(chunk_lore(items, count=chars, max_tokens=120, overlap=0))
    assert len(chunks) > 1
    assert all(line.startswith("- item") for c in chunks for line in c.text.split("\n"))


def test_run_on_text_without_punctuation_is_hard_split() -> None:
    chunks = list(chunk_lore(["无标点" * 200], count=chars, max_tokens=100, overlap=0))
    assert 6 <= len(chunks) <= 7 and all(len(c.text) <= 100 for c in chunks)
    assert "".join(c.text for c in chunks) == "无标点" * 200


def test_speech_lines() -> None:
    assert parse_speech("春日:「那里」(春日指向操场)") == ("春日", "「那里」(春日指向操场)")
    assert parse_speech("Sheldon:「Agreed.」") == ("Sheldon", "「Agreed.」")
    assert parse_speech('Uncle Zhou: "Ten minutes."') == ("Uncle Zhou", '"Ten minutes."')
    assert parse_speech("'''Scene''':「''A corridor.''」")[0] == "Scene"
    assert parse_speech("这是一段没有说话人的叙述。") is None
    assert looks_like_scene(["阿虚:「特训？」", "春日:「对啊」", "阿虚:「在哪里啊！」"])
    assert not looks_like_scene(["糯米是一个面包师。", "她住在海边。", "注意：她怕打雷。"])


def test_speaker_matcher_short_and_full_names() -> None:
    match = SpeakerMatcher(["凉宫春日", "Haruhi"])
    assert match("春日") and match("凉宫春日") and match("haruhi")
    assert not match("阿虚") and not match(None)
    assert SpeakerMatcher([])("anyone")  # no names: every speaker counts
    assert not SpeakerMatcher([])("Scene")


SCENE = [
    "'''Scene''':「''The bakery at dawn.''」",
    "外婆:「起床了！」",
    "糯米:「再睡五分钟……」",
    "外婆:「面团不等人。」",
    "糯米:「好啦好啦。」",
    "",
    "阿澈:「给芝麻的小鱼干。」",
    "阿澈:「还有你的。」",
    "糯米:「谢谢阿澈！」",
    "芝麻:「喵。」",
]


def test_scene_exchanges_end_in_her_lines_and_respect_breaks() -> None:
    chunks = list(chunk_scenes(SCENE, is_character=SpeakerMatcher(["糯米"]), count=chars, max_tokens=200))
    assert len(chunks) == 2
    first, second = chunks
    assert first.text.split("\n") == SCENE[2:5] or first.text.split("\n") == SCENE[1:5]
    assert first.text.endswith("糯米:「好啦好啦。」") and "Scene" not in first.text.split("\n")[-1]
    assert second.text.split("\n") == SCENE[6:9]  # the two lines of 阿澈's turn, then hers; not the cat
    assert (second.line_start, second.line_end) == (7, 9)
    assert second.speakers == ("阿澈", "糯米")


def test_scene_exchanges_pack_up_to_the_budget() -> None:
    lines = []
    for i in range(10):
        lines += [f"外婆:「第{i}个问题？」", f"糯米:「第{i}个回答。」"]
    chunks = list(chunk_scenes(lines, is_character=SpeakerMatcher(["糯米"]), count=chars, max_tokens=60))
    assert len(chunks) > 2
    assert all(sum(len(x) + 1 for x in c.text.split("\n")) <= 60 for c in chunks)
    assert all(c.text.split("\n")[-1].startswith("糯米") for c in chunks)


def test_scene_without_her_lines_yields_nothing() -> None:
    assert list(chunk_scenes(SCENE[6:8], is_character=SpeakerMatcher(["糯米"]), count=chars, max_tokens=100)) == []


ASSISTANT_B = {"role": "assistant", "content": "b"}


def test_dialogue_formats_and_bad_lines() -> None:
    records = [
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello!"}]},
        {"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "a"}, ASSISTANT_B]},
        {"role_A": "阿虚", "role_B": "春日", "query": "「去哪？」", "response": "「跟我来！」"},
        {"instruction": "Say hi", "input": "", "output": "Hi!"},
        {"unrelated": True},
    ]
    lines = [json.dumps(r, ensure_ascii=False) for r in records] + ["{not json"]
    stats = DialogueStats()
    chunks = list(chunk_dialogues(lines, count=chars, max_tokens=200, stats=stats))
    assert [c.text for c in chunks] == [
        "{{user}}: hi\n{{char}}: hello!",
        "{{user}}: a\n{{char}}: b",
        "阿虚: 「去哪？」\n春日: 「跟我来！」",
        "{{user}}: Say hi\n{{char}}: Hi!",
    ]
    assert stats.records == 4 and stats.bad_lines == [5, 6]
    assert [c.line_start for c in chunks] == [1, 2, 3, 4]
