"""Ren'Py and novels on the real files in shared testdata."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from training.importers import ReadOptions, detect
from training.importers.novel import NovelReader, find_quotes
from training.importers.renpy import clean_text, parse_say
from training.textio import read_text

ROOT = Path(__file__).resolve().parents[2]


def renpy(path: Path, **options):
    return list(detect(path).importer.read(path, ReadOptions(**options)))


def test_renpy_the_question_labels_speakers_and_translations(testdata: Path) -> None:
    game = testdata / "vn_scripts" / "renpy_the_question"
    assert detect(game).importer.name == "renpy"
    conversations = {c.meta["label"]: c for c in renpy(game)}
    assert list(conversations) == ["start", "rightaway", "game", "book", "marry", "later"]
    rightaway = conversations["rightaway"]
    first = rightaway.messages[0]
    assert (first.speaker, first.speaker_id, first.text) == ("Sylvie", "s", "Hi there! How was class?")
    assert first.translations == {
        "schinese": "嗨，你好！课上得怎么样？",
        "tchinese": first.translations["tchinese"],
        "japanese": first.translations["japanese"],
    }
    assert rightaway.messages[1].speaker == "Me"
    assert sum(1 for c in conversations.values() for m in c.messages if m.kind == "narration") > 20
    # every spoken line of the original has its Simplified Chinese translation
    spoken = [m for c in conversations.values() for m in c.messages if m.kind == "text"]
    assert all("schinese" in m.translations for m in spoken)
    # escaped quotes and text tags
    assert any(m.text == 'Sure, but what\'s a "visual novel?"' for m in spoken)
    assert all("{" not in m.text for c in conversations.values() for m in c.messages)
    endings = [m.text for m in conversations["later"].messages]
    assert endings[-1] == "Bad Ending."


def test_renpy_reads_a_translation(testdata: Path) -> None:
    script = testdata / "vn_scripts" / "renpy_the_question" / "script.rpy"
    conversations = {c.meta["label"]: c for c in renpy(script, lang="schinese")}
    first = conversations["rightaway"].messages[0]
    assert (first.speaker, first.text) == ("希尔薇", "嗨，你好！课上得怎么样？")
    assert conversations["rightaway"].messages[1].speaker == "我"
    assert conversations["start"].messages[0].text.startswith("当我听到")


def test_renpy_tutorial_nvl_extend_and_tags(testdata: Path) -> None:
    conversations = renpy(testdata / "vn_scripts" / "renpy_tutorial")
    lines = [m for c in conversations for m in c.messages]
    nvl = [m for m in lines if m.speaker_id == "nvle"]
    assert nvl and all(m.speaker == "Eileen" for m in nvl)
    assert any(m.speaker_id == "e" and m.source.startswith("tutorial_nvlmode.rpy") for m in lines)  # define elsewhere
    extended = next(m for m in lines if m.text.startswith("Text tags like"))
    assert extended.text == 'Text tags like {w} work in NVL-mode. As does the "extend" special character.'
    link = next(m for m in lines if "download new versions" in m.text)
    assert "{a=" not in link.text and "https://www.renpy.org/" in link.text
    assert not any("Section(" in m.text or "Tutorial(" in m.text for m in lines)


def test_renpy_say_parser_edge_cases() -> None:
    assert parse_say('    e happy "Hello."').who == "e"
    assert parse_say('"It\'s a videogame.":') is None  # a menu choice
    assert parse_say("    show sylvie green smile") is None
    assert parse_say('"Guard" "Halt!"').who == "=Guard"
    assert parse_say('    $ e(_("What would you like to see?"), interact=False)').what == "What would you like to see?"
    assert clean_text("{b}Good{/b} {{braces}} [[name]") == "Good {braces} [name]"


def test_quotes_mixed_marks() -> None:
    paragraph = '那僧笑道：“你放心。"士隐道：“好"，又说"通灵"二字'
    assert [q.text for q in find_quotes(paragraph)] == ["你放心。", "好", "通灵"]


def test_novel_crlf_and_attribution(testdata: Path) -> None:
    path = testdata / "novels" / "hongloumeng_ch06.txt"
    assert b"\r\n" in path.read_bytes()
    assert detect(path).importer.name == "novel"
    conversations = renpy(path)
    speakers = {m.speaker for c in conversations for m in c.messages}
    assert {"刘姥姥", "凤姐", "周瑞家的", "狗儿", "贾蓉"} <= speakers
    assert all("\r" not in m.text for c in conversations for m in c.messages)
    assert not any(m.text == "通灵" for c in conversations for m in c.messages)
    reader = NovelReader(read_text(testdata / "novels" / "xiyouji_ch01-02.txt").text)
    lines = [line for _, ps in reader.chapters() for line, _ in reader.lines(ps)]
    assert not any(line.text.startswith("花果山福地") for line in lines)  # an inscription, not speech


def test_speaker_attribution_accuracy(testdata: Path) -> None:
    spec = importlib.util.spec_from_file_location("data_novel_speakers", ROOT / "bench" / "data_novel_speakers.py")
    bench = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(bench)
    result = bench.evaluate(testdata)
    assert result["counts"]["all"]["total"] >= 40
    assert result["accuracy"]["test3"] >= 0.85, result["wrong"]
    assert result["accuracy"]["test2"] >= 0.8, result["wrong"]
    assert result["accuracy"]["all"] >= 0.8, result["wrong"]


def test_english_novel(fixtures: Path) -> None:
    (chapter,) = renpy(fixtures / "english_novel.txt")
    assert [m.speaker for m in chapter.messages] == ["Tom", "Anna", "Anna", "Tom", "Tom", "Anna", "Tom", "Mrs. Hale"]
    assert not any(m.text == "breakfast" for m in chapter.messages)


@pytest.mark.parametrize("name", ["hongloumeng_ch01-03.txt", "xiyouji_ch01-02.txt"])
def test_novel_conversations_split_on_chapters(testdata: Path, name: str) -> None:
    conversations = renpy(testdata / "novels" / name)
    chapters = {c.meta["chapter"] for c in conversations}
    assert len(chapters) >= 2 and all(c.messages for c in conversations)
