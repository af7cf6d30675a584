"""Cleaning rules, sessions, merging, deduplication and community Q&A review."""

from __future__ import annotations

from datetime import datetime, timedelta

from training.cleaning import (
    CleanConfig,
    Tally,
    answer_problem,
    asks_something,
    clean_conversation,
    clean_message,
    collapse_runs,
    count_tokens,
    is_spam,
)
from training.conversation import Conversation, Message
from training.dedupe import deduplicate


def message(text: str, speaker: str = "a", minutes: int = 0, kind: str = "text") -> Message:
    return Message(speaker=speaker, text=text, time=datetime(2024, 1, 1) + timedelta(minutes=minutes), kind=kind)


def test_emoji_kaomoji_and_wechat_codes_are_kept() -> None:
    tally = Tally()
    for text in ("在呀[旺柴]", "好耶😂😂", "(≧▽≦)", "[捂脸][呲牙]", "ヽ(✿ﾟ▽ﾟ)ノ"):
        assert clean_message(message(text), CleanConfig(), tally).text == text
    assert not tally.dropped_messages


def test_noise_spam_and_system_are_dropped_with_reasons() -> None:
    tally = Tally()
    config = CleanConfig()
    dropped = [
        message("哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈哈"),
        message("啊啊啊啊啊啊啊啊啊啊啊啊啊啊"),
        message('"小林" 拍了拍我'),
        message("你撤回了一条消息"),
        message("复制这段内容后打开手机淘宝 ￥AbCd1234Ef￥"),
        message("林晓 加入了群聊", kind="system"),
        message("   "),
    ]
    assert all(clean_message(m, config, tally) is None for m in dropped)
    assert tally.dropped_messages["repeated-character spam"] == 2
    assert tally.dropped_messages["noise: pat notice"] == 1
    assert tally.dropped_messages["noise: recall notice"] == 1
    assert tally.dropped_messages["noise: shopping code"] == 1
    assert tally.dropped_messages["system notice"] == 1
    assert tally.dropped_messages["empty"] == 1


def test_runs_are_shortened_not_dropped() -> None:
    assert collapse_runs("好烦啊啊啊啊啊啊啊啊啊啊啊啊啊啊", 8) == ("好烦啊啊啊啊啊啊啊啊", True)
    assert collapse_runs("哈哈哈哈", 8) == ("哈哈哈哈", False)
    assert not is_spam("哈哈哈哈哈", 12)
    assert is_spam("666666666666666", 12)


def test_media_become_placeholders_and_pii_is_scrubbed() -> None:
    tally = Tally()
    media = clean_message(message("", kind="media").with_text("[图片]"), CleanConfig(), tally)
    assert media.kind == "media" and media.text == "[图片]"
    scrubbed = clean_message(message("我电话13812345678"), CleanConfig(), tally)
    assert scrubbed.text == "我电话<PHONE>" and tally.pii["PHONE"] == 1


def test_sessions_split_on_gaps_and_same_speaker_merges() -> None:
    conversation = Conversation(
        messages=[
            message("在吗", "a", 0),
            message("在", "b", 1),
            message("周末去爬山吗", "a", 2),
            message("好啊", "b", 3),
            message("几点", "b", 4),
            message("到家了吗", "a", 200),
            message("到啦", "b", 201),
        ]
    )
    sessions = clean_conversation(conversation, CleanConfig(session_gap=timedelta(minutes=30)), Tally())
    assert [[m.text for m in s.messages] for s in sessions] == [
        ["在吗", "在", "周末去爬山吗", "好啊\n几点"],
        ["到家了吗", "到啦"],
    ]


def test_too_long_messages_are_dropped() -> None:
    tally = Tally()
    long_text = "".join(chr(0x4E00 + i) for i in range(600))
    assert clean_message(message(long_text), CleanConfig(max_message_tokens=512), tally) is None
    assert tally.dropped_messages["message too long"] == 1
    assert count_tokens("你好 world 2024!") == 5


def test_exact_and_near_duplicates() -> None:
    base = "我最喜欢在阳光好的午后窝在窗边看书，偶尔也会去楼下的面包店买一个刚出炉的可颂，然后慢慢走回家。"
    verdicts = deduplicate([base, base.replace("。", "！"), base.replace("慢慢走", "慢慢地走"), "完全不同的一句话"])
    assert verdicts == [None, "exact", "near", None]


def test_qa_review_rules() -> None:
    config = CleanConfig()
    assert asks_something("你最喜欢吃什么？") and asks_something("What do you do on weekends?")
    assert asks_something("说说你的梦想") and not asks_something("今天天气不错")
    assert answer_problem("你几岁？", "不知道", config) == "answer is a non-answer"
    assert answer_problem("你几岁？", "你几岁？", config) == "answer repeats the question"
    assert answer_problem("你几岁？", "十九", config) == "answer too short"
    assert answer_problem("你几岁？", "我今年十九岁啦", config) is None


def test_people_talking_about_pats_and_red_packets_are_kept() -> None:
    tally = Tally()
    for text in ("我拍了拍他的肩膀说没事", "我收到红包了，谢谢老板！", "已收款，谢谢～"):
        assert clean_message(message(text), CleanConfig(), tally).text == text
    for text in ('我拍了拍"林晓"', '"林晓" 拍了拍我的小脑袋瓜', "收到红包，请在手机上查看", "[转账]请收款", "已收款"):
        assert clean_message(message(text), CleanConfig(), tally) is None, text
