"""Sentence splitting (zh/en, streaming) and tag parsing: tags are never spoken."""

from __future__ import annotations

import pytest

from companion.voice.text import SentenceSplitter, detect_language, parse_tags


def split(text: str, step: int = 1, **kwargs) -> list[str]:
    splitter = SentenceSplitter(**kwargs)
    out = []
    for i in range(0, len(text), step):
        out += splitter.feed(text[i : i + step])
    return out + splitter.flush()


def spoken(text: str, **kwargs) -> list[str]:
    return [parse_tags(raw).text for raw in split(text, **kwargs)]


def test_chinese_and_english_sentences():
    text = "[joy] 欢迎光临月兔烘焙坊！你来得正好。Hi there. It costs 3.5 yuan, Mr. Li said! 真的吗？"
    assert spoken(text, first_clause_chars=None) == [
        "欢迎光临月兔烘焙坊！",
        "你来得正好。",
        "Hi there.",
        "It costs 3.5 yuan, Mr. Li said!",
        "真的吗？",
    ]


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_streaming_does_not_change_the_split(step):
    text = "「好啊！」她笑着说。Wait... really?! Okay. e.g. this stays whole. 第二句～第三句"
    assert split(text, step=step) == split(text, step=1000)


def test_closing_quotes_stay_with_their_sentence():
    assert spoken("「好啊！」她说。", first_clause_chars=None, min_chars=2) == ["「好啊！」", "她说。"]


def test_short_fragments_merge_and_first_sentence_may_cut_at_a_comma():
    assert spoken("Oh! Ok. That is fine.", first_clause_chars=None, min_chars=4) == ["Oh! Ok.", "That is fine."]
    first = spoken("Well, the red-bean buns come out again at three, so you are just in time. Great, thanks.")
    assert first[0] == "Well, the red-bean buns come out again at three,"
    assert first[1:] == ["so you are just in time.", "Great, thanks."]  # only the first sentence is cut early


def test_limits_count_speaking_time_so_chinese_starts_as_soon_as_english():
    # a Chinese character is a syllable: "十九岁！" is long enough to say alone, and the first
    # clause is cut at the first comma after a few syllables, not after ten characters
    assert spoken("十九岁！四月十七号生日。") == ["十九岁！", "四月十七号生日。"]
    assert spoken("我不是说贸易不讲究，只是说，不急。")[0] == "我不是说贸易不讲究，"
    assert spoken("那么，你现在也算成功了。")[0] == "那么，你现在也算成功了。"  # two syllables wait
    assert spoken("No, not really.")[0] == "No, not really."


@pytest.mark.parametrize("step", [1, 2, 1000])
def test_the_first_clause_is_not_cut_inside_a_time_or_a_number(step):
    text = "We are open Monday through Friday 7:00 to 19:00, and on Saturdays 1,000 buns sell out."
    assert spoken(text, step=step)[0] == "We are open Monday through Friday 7:00 to 19:00,"


def test_long_text_without_punctuation_is_cut():
    parts = split("word " * 100, max_chars=60, first_clause_chars=None)
    assert len(parts) > 3
    assert "".join(parts) == "word " * 100


def test_tags_are_parsed_out_and_never_spoken():
    s = parse_tags("[joy] *waves* Hello there! \\me bows deeply", emotions=["joy"])
    assert s.text == "Hello there!"
    assert s.emotion == "joy"
    assert s.actions == ["waves", "bows deeply"]
    s = parse_tags("[sighs softly] 好吧。/me 摸了摸猫")
    assert (s.text, s.emotion, s.actions) == ("好吧。", None, ["sighs softly", "摸了摸猫"])
    assert parse_tags("[blush] 谢谢", emotions={"blush": "x"}).emotion == "blush"
    assert parse_tags("Half a tag [jo").text == "Half a tag"


def test_splitter_never_cuts_inside_a_tag():
    parts = split("*waves. smiles* Hi! [think. hmm] Yes.", first_clause_chars=None, min_chars=2)
    assert [parse_tags(p).text for p in parts] == ["Hi!", "Yes."]
    assert parse_tags(parts[0]).actions == ["waves. smiles"]


def test_language_guess():
    assert detect_language("我喜欢 Vega") == "zh"
    assert detect_language("Hello 你") == "en"
    assert detect_language("こんにちは") == "ja"
    assert detect_language("123", default="zh") == "zh"
