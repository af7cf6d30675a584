"""From conversations to <character>/dataset/: roles, samples, export, split, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from companion.character import Character
from companion.prompt import NEW_CHAT_MARKER, persona_prompt
from training.cleaning import CleanConfig
from training.dataset import (
    Selection,
    build_dataset,
    dataset_info,
    public_text,
    split_value,
    to_alpaca,
    write_dataset,
)
from training.importers import ReadOptions, read_paths


def build(paths: list[Path], names: tuple[str, ...] = (), **config):
    return build_dataset(
        read_paths(paths, ReadOptions(names=names)),
        selection=Selection(names=names),
        config=CleanConfig(eval_ratio=config.pop("eval_ratio", 0.0), **config),
    )


def turns(sample) -> list[tuple[str, str]]:
    return sample.turns


def test_wechat_log_becomes_an_ai_me_dataset(fixtures: Path) -> None:
    dataset = build([fixtures / "memotrace_utf8.csv"])
    samples = dataset.train
    assert [turns(s) for s in samples] == [
        [
            ("user", "在吗？"),
            ("assistant", "在呀，怎么啦[旺柴]"),
            ("user", "周末一起去爬山吗？"),
            ("assistant", "好啊好啊！\n几点出发 (≧▽≦)"),
            ("user", "[图片]\n八点吧，我电话<PHONE>，到了打我"),
            ("assistant", "收到😄"),
        ],
        [("user", "到家了吗"), ("assistant", "到啦，今天好开心"), ("user", "下次还一起去"), ("assistant", "一定！")],
    ]
    report = dataset.report.to_json()
    assert report["pii_replaced"] == {"PHONE": 1}
    assert report["edited_messages"]["media placeholder removed from a reply"] == 2  # [表情包], [语音]
    assert report["dropped_messages"]["repeated-character spam"] == 1
    assert report["dropped_messages"]["system notice"] == 1
    assert report["assistant_speakers"] == ["我"]


def test_me_by_name_or_id_in_qq_logs(fixtures: Path) -> None:
    by_email = build([fixtures / "qq.txt"], ("zhang@example.com",))
    by_name = build([fixtures / "qq.txt"], ("小张",))
    assert [s.turns for s in by_email.train] == [s.turns for s in by_name.train]
    first = by_name.train[0].turns
    assert first[0] == ("user", "在不在") and first[1] == ("assistant", "在的，刚下课\n有什么事")
    assert first[2] == ("user", "[图片]\n帮我看看这道题，我QQ：<QQ> 的小号也能找我")


def test_group_chats_name_the_other_speakers(tmp_path: Path) -> None:
    path = tmp_path / "group.txt"
    path.write_text(
        "2024-01-01 10:00:00 A\n大家好\n\n2024-01-01 10:00:10 B\n早\n\n2024-01-01 10:00:20 C\n早上好\n\n",
        encoding="utf-8",
    )
    dataset = build([path], ("C",))
    assert dataset.train[0].turns == [("user", "A: 大家好\nB: 早"), ("assistant", "早上好")]


def test_as_speaker_in_a_visual_novel(testdata: Path) -> None:
    dataset = build([testdata / "vn_scripts" / "renpy_the_question"], ("Sylvie",))
    first = dataset.train[0].turns
    assert first[0] == ("user", NEW_CHAT_MARKER) and first[1] == ("assistant", "Hi there! How was class?")
    assert all(role == "assistant" for role, _ in first[1::2]) and first[-1][0] == "assistant"
    assert "Sure, but what's a" in " ".join(text for _, text in first)


def test_character_missing_gives_no_samples(fixtures: Path) -> None:
    dataset = build([fixtures / "scene.txt"], ("Nobody",))
    assert not dataset.train and dataset.report.conversations_without_character == 1


def test_qa_community_review(fixtures: Path) -> None:
    dataset = build([fixtures / "qa.jsonl", fixtures / "qa.csv"])
    answers = {s.turns[0][1]: s.turns[1][1] for s in dataset.train}
    assert answers == {
        "你最喜欢吃什么？": "当然是刚出炉的红豆包！外皮脆脆的，里面的红豆沙甜而不腻。",
        "What do you do on weekends?": "I go stargazing on the lighthouse hill with my club, weather permitting!",
        "你喜欢猫吗？": "超喜欢！我家的芝麻是一只很懒的橘猫。",
    }
    dropped = dataset.report.to_json()["dropped_samples"]
    assert dropped == {
        "Q&A: lower-voted answer to the same question": 1,
        "Q&A: answer is a non-answer": 2,
        "Q&A: answer too short": 1,
        "Q&A: question asks nothing": 1,
        "Q&A: voted down": 1,
        "Q&A: answer repeats the question": 1,
    }


def test_long_conversations_are_windowed(fixtures: Path, tmp_path: Path) -> None:
    lines = []
    for i in range(40):
        lines.append(f"2024-01-01 10:{i:02d}:00 A\n问题{i}，今天过得怎么样呀\n")
        lines.append(f"2024-01-01 10:{i:02d}:30 B\n回答{i}，还不错，吃了好吃的面包\n")
    path = tmp_path / "long.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    dataset = build([path], ("B",), max_turns=10)
    assert len(dataset.train) == 8
    assert all(len(s.turns) == 10 and s.turns[0][0] == "user" for s in dataset.train)


def test_split_is_deterministic_and_keeps_an_eval_set(testdata: Path) -> None:
    paths = [testdata / "chatharuhi" / "haruhi" / "texts"]
    first = build(paths, ("春日",), eval_ratio=0.1)
    second = build(paths, ("春日",), eval_ratio=0.1)
    assert [s.id for s in first.eval] == [s.id for s in second.eval] and first.eval
    assert {s.group for s in first.eval}.isdisjoint({s.group for s in first.train})
    assert 0 <= split_value("x") < 1 and split_value("x") == split_value("x")
    share = len(first.eval) / (len(first.eval) + len(first.train))
    assert 0.03 < share < 0.25


def test_alpaca_export_keeps_history() -> None:
    from training.dataset import Sample

    sample = Sample(
        turns=[("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d")], source="x", group="g", system="S"
    )
    assert to_alpaca(sample) == {"instruction": "c", "input": "", "output": "d", "system": "S", "history": [["a", "b"]]}


def test_write_dataset_layout_and_persona_prompt(mochi: Path) -> None:
    character = Character.load(mochi)
    system = persona_prompt(character.card, user_name="User")
    dataset = build_dataset(
        read_paths([mochi / "corpus" / "dialogues", mochi / "corpus" / "scenes"]),
        selection=Selection(names=("Mochi", "糯米")),
        config=CleanConfig(public_text=public_text(mochi, character.card)),
        system=system,
        character="mochi",
    )
    target = write_dataset(mochi, dataset, "mochi")
    assert sorted(p.name for p in target.iterdir()) == [
        "dataset_info.json",
        "eval.alpaca.jsonl",
        "eval.jsonl",
        "report.json",
        "report.md",
        "train.alpaca.jsonl",
        "train.jsonl",
    ]
    records = [json.loads(line) for line in (target / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) > 300 and (target / "eval.jsonl").read_text(encoding="utf-8").strip()
    for record in records:
        tags = [turn["from"] for turn in record["conversations"]]
        assert tags[0] == "system" and record["conversations"][0]["value"] == system
        assert tags[1::2] == ["human"] * len(tags[1::2]) and tags[2::2] == ["gpt"] * len(tags[2::2])
        assert tags[-1] == "gpt"
    scene_lines = [r for r in records if r["source"].endswith(".txt")]
    assert scene_lines  # the scenes contribute Mochi's lines as 糯米/Mochi
    report = json.loads((target / "report.json").read_text(encoding="utf-8"))
    assert report["pii_replaced"].get("ADDRESS", 0) == 0  # her bakery's address is in her lore: not private
    info = json.loads((target / "dataset_info.json").read_text(encoding="utf-8"))
    assert info == dataset_info("mochi")
    assert info["mochi"]["file_name"] == "train.jsonl" and info["mochi"]["formatting"] == "sharegpt"
    assert "## Samples dropped" in (target / "report.md").read_text(encoding="utf-8")


def test_failed_write_leaves_the_old_dataset(mochi: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = build([fixtures / "memotrace_utf8.csv"])
    target = write_dataset(mochi, good, "mochi")
    before = (target / "train.jsonl").read_text(encoding="utf-8")

    def boom(sample):
        raise RuntimeError("disk full")

    monkeypatch.setattr("training.dataset.to_alpaca", boom)
    with pytest.raises(RuntimeError):
        write_dataset(mochi, good, "mochi")
    assert (target / "train.jsonl").read_text(encoding="utf-8") == before
    assert not [p for p in mochi.iterdir() if p.name.startswith(".dataset")]


def test_narration_as_context(fixtures: Path) -> None:
    dataset = build_dataset(
        read_paths([fixtures / "scene.txt"]),
        selection=Selection(names=("阿禾",), narration="context"),
        config=CleanConfig(eval_ratio=0.0, narration="context"),
    )
    (sample,) = dataset.train
    assert sample.turns[0] == ("user", "（傍晚，小镇的面包店。）\n今天的面包卖完了吗？")
    assert sample.turns[2] == ("user", "太好了！\n（小麦开心地跳了起来）")
