"""Loops at the end of a streaming reply are cut after their first round; speech-like repeats are not."""

from __future__ import annotations

import pytest

from companion.repeats import LoopGuard, looping_tail, units


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("[joy] 红豆包，红豆馅，红豆糖，红豆糖水，红豆糖水，红豆糖水，", "[joy] 红豆包，红豆馅，红豆糖，红豆糖水"),
        ("[Box box] ……[box box] [box box] [box box] [box box] ", "[Box box] ……[box box] "),
        ("He counts the seconds. He counts the seconds. He counts the seconds. ", "He counts the seconds. "),
        ("嗯嗯，好的好的好的好的", "嗯嗯，好的"),
        # speech, not loops: single words, twice, a refrain of 2-3 words three times
        ("no no no no no no no no", None),
        ("哈哈哈哈哈哈哈哈哈哈，太好笑了！", None),
        ("Good night! Good night!", None),
        ("It is what it is, what it is, what it is", None),
        ("我好想你，我好想你。", None),
        ("1. buy bread 2. buy milk 3. buy eggs", None),
    ],
)
def test_looping_tail(text: str, kept: str | None) -> None:
    end = looping_tail(text)
    assert (text[:end] if end is not None else None) == kept


@pytest.mark.parametrize("step", [1, 2, 5, 13])
def test_the_guard_cuts_the_same_however_the_reply_streams(step: int) -> None:
    reply = "Seven in the morning. " + "红豆糖水，" * 12 + "never reached"
    guard, passed = LoopGuard(), ""
    for i in range(0, len(reply), step):
        passed += guard.feed(reply[i : i + step])
        if guard.looped:
            break
    assert guard.looped and guard.text == "Seven in the morning. 红豆糖水，"
    assert passed.startswith(guard.text) and "never" not in passed and len(passed) <= len(guard.text) + 3 * 5 + step


def test_units_are_words_and_cjk_characters() -> None:
    assert units("Hi, 你好 there!") == ["hi", "你", "好", "there"]
