"""Strict reading of LLM output: every malformed shape is refused with its reason."""

from __future__ import annotations

import pytest

from training.distill.parse import Malformed, parse_answer, parse_questions, parse_script, split_tags
from training.distill.pipeline import chunk_text, sharegpt_records, training_text

PASSAGE = "刘姥姥带着板儿来到荣国府。周瑞家的迎了出来。刘姥姥笑道：“太爷们纳福。”周瑞家的问：“你是哪里来的？”"
GOOD = (
    '{"script": [{"narration": "刘姥姥来到荣国府门前。"},'
    '{"speaker": "刘姥姥", "line": "太爷们纳福。", "action": "蹭到角门前", "mood": "拘谨"},'
    '{"speaker": "周瑞家的", "line": "你是哪里来的？"}]}'
)


def test_json_script_with_fences_and_tags():
    script = parse_script(f"好的：\n```json\n{GOOD}\n```", passage=PASSAGE, known=[])
    assert [t.speaker for t in script.turns] == [None, "刘姥姥", "周瑞家的"]
    assert script.render() == (
        "【刘姥姥来到荣国府门前。】\n刘姥姥：\\me 蹭到角门前 \\emoji 拘谨 太爷们纳福。\n周瑞家的：你是哪里来的？"
    )


def test_script_text_format_round_trips():
    text = "【刘姥姥来到荣国府门前。】\n刘姥姥：\\me 蹭到角门前 \\emoji 拘谨 太爷们纳福。\n周瑞家的：你是哪里来的？"
    script = parse_script(text, passage=PASSAGE, known=[])
    assert script.render() == text
    assert script.lines[0].action == "蹭到角门前" and script.lines[0].mood == "拘谨"


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ("", "no JSON"),
        ("I cannot help with that.", "no JSON"),
        (GOOD[:70], "truncated JSON"),
        ('{"script": [1, 2]}', "wrong shape"),
        ('{"script": "刘姥姥：你好"}', "wrong shape"),
        (
            '{"script": [{"speaker": "林黛玉", "line": "你好呀"}, {"speaker": "刘姥姥", "line": "好"}]}',
            "unknown speaker",
        ),
        ('{"script": [{"speaker": "刘姥姥", "line": ""}]}', "empty line"),
        ('{"script": [{"speaker": "刘姥姥", "line": "太爷们纳福。"}]}', "too few lines"),
        (
            '{"script": [{"speaker": "周瑞家的", "line": "谁？"}, {"speaker": "周瑞家的", "line": "说呀"}]}',
            "no line by",
        ),
        ("刘姥姥：太爷们纳福。\n这一行不是剧本", "no JSON"),
    ],
)
def test_malformed_scripts_are_refused(output: str, reason: str):
    with pytest.raises(Malformed) as refused:
        parse_script(output, passage=PASSAGE, known=[], focus=["刘姥姥"])
    assert refused.value.reason.startswith(reason)


def test_known_names_may_speak_outside_the_passage():
    text = '{"script": [{"speaker": "姥姥", "line": "好"}, {"speaker": "刘姥姥", "line": "走吧"}]}'
    assert len(parse_script(text, passage="刘姥姥说走吧", known=["姥姥"]).lines) == 2


def test_questions_and_answers():
    assert parse_questions('{"questions": ["你怕吗？", "你怕吗？", "不是问题", "为什么来？"]}', limit=5) == [
        "你怕吗？",
        "为什么来？",
    ]
    assert parse_questions("1. 你怕吗？\n2) 为什么来？\n- 随便说说", limit=1) == ["你怕吗？"]
    with pytest.raises(Malformed, match="no questions"):
        parse_questions("好的", limit=3)
    with pytest.raises(Malformed, match="truncated"):
        parse_questions('{"questions": ["你怕吗？", "为', limit=3)
    turn = parse_answer("\\me 搓着手\n\\emoji 难为情\n刘姥姥：我也是没法子才来的。", character="刘姥姥")
    assert (turn.text, turn.action, turn.mood) == ("我也是没法子才来的。", "搓着手", "难为情")
    for bad, reason in (
        ("", "empty answer"),
        ('{"answer": "x"}', "wrong shape"),
        ("我来了。\nQ: 然后呢？\nA: 然后走了。", "wrong roles"),
        ("好" * 700, "too long"),
    ):
        with pytest.raises(Malformed) as refused:
            parse_answer(bad, character="刘姥姥")
        assert refused.value.reason == reason
    assert split_tags("/me waves /emoji happy Hi!") == ("Hi!", "waves", "happy")


def test_chunks_stay_inside_chapters_and_have_stable_ids():
    text = "第一回 开始\n" + "甲说：“好。”\n" * 50 + "第二回 再见\n乙说：“走。”\n"
    chunks = chunk_text(text, "n.txt", 200)
    assert chunks[-1].chapter == "第二回 再见" and chunks[-1].text == "乙说：“走。”"
    assert all(len(c.text) <= 200 for c in chunks[:-1]) and {c.chapter for c in chunks[:-1]} == {"第一回 开始"}
    assert [c.id for c in chunk_text(text, "n.txt", 200)] == [c.id for c in chunks]
    long = chunk_text("长" * 100 + "。" + "句" * 500, "l.txt", 200)
    assert all(len(c.text) <= 300 for c in long) and "".join(c.text for c in long) == "长" * 100 + "。" + "句" * 500


def test_sharegpt_makes_her_the_assistant():
    script = parse_script(GOOD, passage=PASSAGE, known=[])
    record = {"id": "r1", "kind": "roleplay", "source": "n.txt", "script": [t.to_json() for t in script.turns]}
    interview = {"id": "i1", "kind": "interview", "source": "n.txt", "character": "刘姥姥", "question": "怕吗？",
                 "answer": "不怕。", "action": None, "mood": "坦然"}  # fmt: skip
    out = list(sharegpt_records([record, interview], ("刘姥姥",)))
    assert [m["from"] for m in out[0]["conversations"]] == ["human", "gpt"]  # her line, then others trimmed
    assert out[0]["conversations"][0]["value"] == "（刘姥姥来到荣国府门前。）"
    assert out[0]["conversations"][1]["value"] == "[拘谨] \\me 蹭到角门前\n太爷们纳福。"
    assert out[1]["conversations"] == [{"from": "human", "value": "怕吗？"}, {"from": "gpt", "value": "[坦然]\n不怕。"}]
    assert list(sharegpt_records([record], ("林黛玉",))) == []
    assert training_text(script.lines[1]) == "你是哪里来的？"
