"""Every importer on fixtures written in the documented layouts, detection, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from companion.errors import InputFileError
from training.importers import ReadOptions, detect, importers, read_paths
from training.textio import read_text

EXPECTED = {
    "memotrace_utf8.csv": "memotrace-csv",
    "memotrace_new.csv": "memotrace-csv",
    "memotrace.txt": "memotrace-txt",
    "memotrace_ai.txt": "memotrace-ai-txt",
    "memotrace_train.json": "memotrace-json",
    "pywxdump_new.csv": "pywxdump-csv",
    "pywxdump_old.csv": "pywxdump-csv",
    "chatlog.json": "wechat-chatlog",
    "qq.txt": "qq-txt",
    "sillytavern.jsonl": "sillytavern",
    "qa.jsonl": "qa",
    "qa.csv": "qa",
    "scene.txt": "scenes",
    "scenario.ks": "kirikiri",
    "english_novel.txt": "novel",
}


def read(path: Path, **options):
    return list(detect(path).importer.read(path, ReadOptions(**options)))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_detects_each_fixture(fixtures: Path, name: str) -> None:
    assert detect(fixtures / name).importer.name == EXPECTED[name]


def test_importer_names_are_unique() -> None:
    names = [i.name for i in importers()]
    assert len(names) == len(set(names))


def test_memotrace_csv(fixtures: Path) -> None:
    (chat,) = read(fixtures / "memotrace_utf8.csv")
    messages = chat.messages
    assert len(messages) == 16
    assert messages[0].speaker == "小林" and messages[0].speaker_id == "wxid_friend001" and not messages[0].is_self
    assert messages[1].is_self and messages[1].text == "在呀，怎么啦[旺柴]"
    assert messages[5].kind == "media" and messages[5].text == "[图片]"
    assert messages[7].text == "[表情包]"
    assert messages[8].kind == "system"
    assert messages[13].text == "下次还一起去" and messages[13].kind == "text"  # a quoted reply keeps its words
    assert messages[15].text == "[语音]"
    assert messages[0].time is not None and messages[0].time.year == 2023


def test_memotrace_new_csv_and_txt(fixtures: Path) -> None:
    (chat,) = read(fixtures / "memotrace_new.csv")
    assert [m.is_self for m in chat.messages] == [False, True, False, False, True]
    (txt,) = read(fixtures / "memotrace.txt")
    assert [m.speaker for m in txt.messages] == ["小雨", "我", "小雨", "小雨", "我"]
    assert txt.messages[1].text == "还没想好\n你有推荐吗"
    assert "引用" not in txt.messages[3].text


def test_memotrace_ai_txt_and_json(fixtures: Path) -> None:
    (chat,) = read(fixtures / "memotrace_ai.txt")
    assert [m.speaker for m in chat.messages] == ["小雨", "我", "小雨", "我"]
    first, _second = read(fixtures / "memotrace_train.json")
    assert [m.role for m in first.messages] == ["user", "assistant"]
    assert first.messages[1].speaker == "阿白" and first.messages[1].text == "火锅！\n我已经饿了"
    assert "system" not in first.meta  # MemoTrace's generic prompt is replaced by the card's persona


def test_pywxdump_both_layouts(fixtures: Path) -> None:
    (new,) = read(fixtures / "pywxdump_new.csv")
    (old,) = read(fixtures / "pywxdump_old.csv")
    assert [m.text for m in old.messages] == ["周末有空吗", "有空，怎么了", "[图片]", "帮我搬个家", "没问题，几点？"]
    assert new.messages[2].text == "[表情包]" and new.messages[5].kind == "system"
    assert old.messages[1].is_self and not old.messages[0].is_self
    assert new.messages[0].time.month == 10


def test_chatlog_json(fixtures: Path) -> None:
    (chat,) = read(fixtures / "chatlog.json")
    assert [m.is_self for m in chat.messages] == [False, True, False]
    assert chat.messages[2].text == "[图片]"


def test_qq_txt_sections_ids_and_times(fixtures: Path) -> None:
    friend, group = read(fixtures / "qq.txt")
    assert friend.meta["chat"] == "老王" and friend.meta["group"] == "我的好友"
    assert group.meta["chat"] == "高三(2)班" and group.meta["group"] == "我的群聊"
    assert [m.speaker for m in friend.messages] == ["老王", "小张", "老王", "老王", "小张"]
    assert friend.messages[0].speaker_id == "123456789" and friend.messages[1].speaker_id == "zhang@example.com"
    assert friend.messages[1].text == "在的，刚下课\n有什么事"
    assert friend.messages[4].time.hour == 20  # 8:46:02 PM
    assert group.messages[0].speaker == "阿强"  # 【班长】 title dropped
    assert group.messages[2].kind == "system"


def test_sillytavern(fixtures: Path) -> None:
    (chat,) = read(fixtures / "sillytavern.jsonl")
    assert chat.meta["default_as"] == "Seraphina"
    assert [m.role for m in chat.messages] == [None, "user", None, "user", None]
    assert chat.messages[-1].text.endswith("(◕‿◕)")


def test_scenes_and_kirikiri(fixtures: Path) -> None:
    (scene,) = read(fixtures / "scene.txt")
    spoken = [m for m in scene.messages if m.kind != "narration"]
    assert [m.speaker for m in spoken] == ["小麦", "阿禾", "小麦", "阿禾"]
    assert spoken[2].text == "太好了！"
    (ks,) = read(fixtures / "scenario.ks")
    assert [(m.speaker, m.text) for m in ks.messages if m.kind == "text"] == [
        ("遥", "ねえ、今日一緒に帰らない？"),
        ("健太", "いいよ。\nちょっと待ってて"),
        ("遥", "漢字の宿題、もう終わった？"),
        ("健太", "まだだよ"),
    ]
    assert "f.counter" not in " ".join(m.text for m in ks.messages)
    assert "[注]" in ks.messages[4].text


def test_kirikiri_shift_jis(tmp_path: Path, fixtures: Path) -> None:
    text = (fixtures / "scenario.ks").read_text(encoding="utf-8")
    path = tmp_path / "sjis.ks"
    path.write_bytes(text.encode("cp932"))
    (ks,) = read(path)
    assert ks.messages[1].text == "ねえ、今日一緒に帰らない？"


def test_sft_formats(tmp_path: Path) -> None:
    sharegpt = tmp_path / "sg.json"
    sharegpt.write_text(
        json.dumps(
            [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}], "system": "S"}]
        ),
        encoding="utf-8",
    )
    role_content = tmp_path / "rc.jsonl"
    role_content.write_text(
        json.dumps({"conversations": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}) + "\n",
        encoding="utf-8",
    )
    openai = tmp_path / "oa.jsonl"
    openai.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "sys"},
                    {"role": "user", "content": [{"type": "text", "text": "q"}]},
                    {"role": "assistant", "content": "r"},
                ]
            }
        )
        + "\n",
        encoding="utf-8",
    )
    alpaca = tmp_path / "al.json"
    alpaca.write_text(
        json.dumps([{"instruction": "i", "input": "x", "output": "o", "history": [["h1", "a1"]], "system": "s"}]),
        encoding="utf-8",
    )
    assert detect(sharegpt).importer.name == "sharegpt"
    assert detect(role_content).importer.name == "sharegpt"
    assert detect(openai).importer.name == "openai"
    assert detect(alpaca).importer.name == "alpaca"
    (sg,) = read(sharegpt)
    assert [(m.role, m.text) for m in sg.messages] == [("user", "hi"), ("assistant", "hello")]
    assert sg.meta["system"] == "S"
    (rc,) = read(role_content)
    assert [m.role for m in rc.messages] == ["user", "assistant"]
    (oa,) = read(openai)
    assert oa.meta["system"] == "sys" and oa.messages[0].text == "q"
    (al,) = read(alpaca)
    assert [m.text for m in al.messages] == ["h1", "a1", "i\nx", "o"] and al.meta["system"] == "s"


def test_llamafactory_dataset_info(testdata: Path) -> None:
    info = testdata / "sft_formats" / "llamafactory" / "dataset_info.json"
    assert detect(info).importer.name == "llamafactory"
    conversations = list(detect(info).importer.read(info, ReadOptions(variables={"name": "Mochi", "author": "us"})))
    by_dataset: dict[str, int] = {}
    for conversation in conversations:
        by_dataset[conversation.meta["dataset"]] = by_dataset.get(conversation.meta["dataset"], 0) + 1
    assert by_dataset == {
        "identity": 91,
        "alpaca_zh_demo": 1000,
        "glaive_toolcall_zh_demo": 300,
        "mllm_demo": 6,
        "dpo_zh_demo": 300,
    }
    identity = next(c for c in conversations if c.meta["dataset"] == "identity")
    assert "Mochi" in identity.messages[-1].text and "{{name}}" not in identity.messages[-1].text
    glaive = next(c for c in conversations if c.meta["dataset"] == "glaive_toolcall_zh_demo")
    assert all(m.role in ("user", "assistant") for m in glaive.messages)
    dpo = next(c for c in conversations if c.meta["dataset"] == "dpo_zh_demo")
    assert dpo.messages[-1].role == "assistant"  # the chosen answer
    only = list(detect(info).importer.read(info, ReadOptions(datasets=("identity",))))
    assert len(only) == 91
    with pytest.raises(InputFileError, match="no dataset named nope"):
        list(detect(info).importer.read(info, ReadOptions(datasets=("nope",))))


def test_chatharuhi_corpora(testdata: Path) -> None:
    texts = testdata / "chatharuhi" / "haruhi" / "texts"
    files = sorted(texts.iterdir())[:20]
    speakers: set[str] = set()
    for path in files:
        assert detect(path).importer.name == "scenes"
        for conversation in read(path):
            speakers.update(conversation.speakers)
    assert {"春日", "阿虚"} <= speakers
    pairs = read(testdata / "chatharuhi" / "haruhi" / "all_chat_datas.jsonl")
    assert pairs and all(len(c.messages) == 2 for c in pairs)
    assert pairs[0].messages[1].speaker == "春日" and not pairs[0].messages[1].text.startswith("「")
    sheldon = sorted((testdata / "chatharuhi" / "Sheldon" / "texts").iterdir())[0]
    (scene,) = read(sheldon)
    assert "Sheldon" in scene.speakers and all(m.speaker != "'''Scene'''" for m in scene.messages)


# ---- encodings and bad input ----


def test_encodings_gb18030_utf16_bom(tmp_path: Path, fixtures: Path) -> None:
    text = (fixtures / "qq.txt").read_text(encoding="utf-8")
    for encoding, name in (("gb18030", "gbk.txt"), ("utf-16", "u16.txt"), ("utf-8-sig", "bom.txt")):
        path = tmp_path / name
        path.write_bytes(text.encode(encoding))
        decoded = read_text(path)
        assert decoded.text.startswith("消息记录"), encoding
        assert detect(path).importer.name == "qq-txt"
        friend, _group = read(path)
        assert friend.messages[0].text == "在不在"
    csv_text = (fixtures / "pywxdump_new.csv").read_text(encoding="utf-8")
    gbk_csv = tmp_path / "gbk.csv"
    gbk_csv.write_bytes(csv_text.encode("gb18030"))
    assert read(gbk_csv)[0].messages[1].text == "刚下班，累死了"


def test_undecodable_file_names_the_encodings(tmp_path: Path) -> None:
    path = tmp_path / "junk.txt"
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(InputFileError) as error:
        read_text(path)
    message = str(error.value)
    assert "junk.txt" in message and "UTF-8" in message and "GB18030" in message and "UTF-16" in message


def test_truncated_json_names_file_and_position(tmp_path: Path, fixtures: Path) -> None:
    data = (fixtures / "memotrace_train.json").read_text(encoding="utf-8")
    path = tmp_path / "cut_train.json"
    path.write_text(data[: len(data) // 2], encoding="utf-8")
    with pytest.raises(InputFileError) as error:
        read(path)
    message = str(error.value)
    assert "cut_train.json" in message and "line" in message and "column" in message and "truncated" in message


def test_truncated_jsonl_line(tmp_path: Path, fixtures: Path) -> None:
    lines = (fixtures / "sillytavern.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join([*lines[:3], lines[3][:25]]) + "\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"chat\.jsonl: JSON ends early at line 4"):
        read(path)


def test_unknown_format_says_what_was_tried(tmp_path: Path) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(b"\x00\x01\x02 nothing here")
    with pytest.raises(InputFileError) as error:
        detect(path)
    assert "unknown format" in str(error.value) and "qq-txt" in str(error.value) and "--format" in str(error.value)


def test_folder_walk_skips_unknown_files(tmp_path: Path, fixtures: Path) -> None:
    (tmp_path / "chats").mkdir()
    (tmp_path / "chats" / "a.csv").write_bytes((fixtures / "pywxdump_old.csv").read_bytes())
    (tmp_path / "chats" / "b.xyz").write_bytes(b"\x00\x01")
    (tmp_path / "chats" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")  # media beside the text: not even tried
    skipped: list = []
    found = [(d.importer.name, len(list(c))) for d, c in read_paths([tmp_path / "chats"], skipped=skipped)]
    assert found == [("pywxdump-csv", 1)]
    assert [p.name for p, _ in skipped] == ["b.xyz"]


@pytest.mark.parametrize("stream", [False, True])
def test_multiline_csv_fields_and_streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool) -> None:
    if stream:
        monkeypatch.setattr("training.textio.STREAM_ABOVE", 10)
    path = tmp_path / "m.csv"
    header = "id,MsgSvrID,type_name,is_sender,talker,room_name,msg,src,CreateTime\n"
    rows = '1,1,文本,0,a,a,"第一行\n第二行",,2024/10/4 18:02\n2,2,文本,1,me,a,ok,,2024/10/4 18:03\n'
    path.write_bytes((header + rows).encode("gb18030"))
    (chat,) = read(path)
    assert [m.text for m in chat.messages] == ["第一行\n第二行", "ok"]


def test_big_json_arrays_stream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixtures: Path) -> None:
    from training.textio import iter_json_array

    monkeypatch.setattr("training.textio.STREAM_ABOVE", 10)
    items = [
        {"conversations": [{"from": "human", "value": f"问{i}"}, {"from": "gpt", "value": "答" * i}]}
        for i in range(400)
    ]
    path = tmp_path / "big.json"
    path.write_text(json.dumps(items, ensure_ascii=False, indent=2), encoding="utf-8")
    assert [item for _, item in iter_json_array(path, chunk=512)] == items
    assert len(read(path)) == 400
    (tmp_path / "cut.json").write_text(path.read_text(encoding="utf-8")[:20000], encoding="utf-8")
    with pytest.raises(InputFileError, match=r"cut\.json: JSON ends early at character \d+"):
        list(iter_json_array(tmp_path / "cut.json", chunk=512))
    assert len(read(fixtures / "memotrace_train.json")) == 2 and len(read(fixtures / "chatlog.json")[0].messages) == 3
