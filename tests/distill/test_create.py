"""`companion create --name`: card, Q&A in her voice, filtering, dataset, adapter, knowledge, over real HTTP
(a scripted teacher; the adapter is trained on the tiny Gemma-3 so the test stays fast)."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from companion.cli import app
from tests.support.openai_server import scripted_openai
from tests.training_lora.conftest import gemma_dir, make_settings, tiny_model_dir, tokenizer  # noqa: F401

DOC = "茶茶是山脚下一家小茶馆的主人，十九岁，说话慢条斯理，最爱白茶。她从外婆那里学会了炒茶，也怕打雷。"
CHARS = "山水云雨风花茶叶香甜苦涩清晨黄昏月光石桥小溪竹林炉火木窗铜壶瓷杯外婆故事春夏秋冬慢慢轻轻暖"
CARD = {
    "description": "{{char}}是山脚下小茶馆的主人，十九岁，跟外婆学会了炒茶，说话慢条斯理。",
    "personality": "温柔, 认真, 有点胆小",
    "scenario": "{{user}}在雨天走进了{{char}}的茶馆。",
    "first_mes": "欢迎光临，先坐下歇歇脚，我给你泡一壶白茶吧。",
    "example_dialogue": [{"user": "这是什么茶？", "char": "是今年的白牡丹，你闻闻，是不是有股花香？"}],
    "tags": ["茶", "温柔"],
}


def answer_for(question: str) -> str:
    rng = random.Random(hashlib.sha256(question.encode()).hexdigest())
    return f"\\me 放下茶壶\n\\emoji 开心\n我想想呀，{''.join(rng.sample(CHARS, 18))}，就是这样。"


def teacher(body, fail: set[str] = frozenset()):
    system = body["messages"][0]["content"]
    user = body["messages"][-1]["content"]
    if "character cards" in system:
        if "card" in fail:
            return 200, {}, "好的，这是角色卡：茶茶是个好姑娘。"
        return 200, {}, json.dumps(CARD, ensure_ascii=False)
    if "interview questions" in system:
        return 200, {}, json.dumps({"questions": ["你最喜欢哪种茶？", "外婆教过你什么？"]}, ensure_ascii=False)
    if "answers" in fail:
        return 503, {}, '{"error": "overloaded"}'
    if user in ("你是从哪里来的？",):
        return 200, {}, "作为一个AI语言模型，我没有家乡。"  # out of character
    if user in ("你平常一天是怎么过的？",):
        return 200, {}, "I usually wake up early and brew tea."  # wrong language
    return 200, {}, answer_for(user)


@pytest.fixture
def create_env(tmp_path: Path, model_data_dir: Path, tiny_model_dir: Path):  # noqa: F811
    settings = make_settings(tmp_path / "data", model_data_dir)
    doc = tmp_path / "chacha.txt"
    doc.write_text(DOC, encoding="utf-8")
    base = ["--name", "茶茶", "--id", "chacha", "--doc", str(doc), "--model", "teacher",
            "--base-model", str(tiny_model_dir), "--steps", "2", "--questions", "6", "--doc-questions", "2",
            "--min-answers", "3", "--no-chat", "--json", "--data-dir", str(settings.data_dir)]  # fmt: skip
    return settings, base


def create(url: str, base: list[str], *extra: str):
    result = CliRunner().invoke(app, ["create", "--base-url", url, *base, *extra])
    result.text = result.output + str(result.exception or "")
    return result


def test_create_from_a_name(create_env):
    _, base = create_env
    with scripted_openai(teacher) as (url, seen):
        result = create(url, base)
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    folder = Path(report["folder"])
    card = yaml.safe_load((folder / "card.yaml").read_text(encoding="utf-8"))
    assert card["name"] == "茶茶" and "茶馆" in card["description"] and card["first_mes"] == CARD["first_mes"]
    assert "<START>" in card["mes_example"] and card["extensions"]["companion"]["language"] == "zh"
    assert report["card_source"] == "drafted by the LLM"
    assert (folder / "corpus" / "lore" / "chacha.txt").read_text(encoding="utf-8") == DOC
    assert report["questions"] == {"bank": 6, "from_documents": 2, "total": 8}
    assert report["answers_kept"] == 6 and report["answers_dropped"] == {"out of character": 1, "wrong language": 1}
    lines = [json.loads(x) for x in (folder / "corpus" / "dialogues" / "created.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and all(r["conversations"][1]["value"].startswith("[开心] \\me 放下茶壶\n") for r in lines)
    assert all("AI" not in r["conversations"][1]["value"] for r in lines)
    assert (
        report["dataset"]["train"] + report["dataset"]["eval"] == 6 and (folder / "dataset" / "train.jsonl").is_file()
    )
    assert (folder / "adapter" / "adapter_model.safetensors").is_file() and report["adapter"]["steps"] == 2
    assert report["knowledge"]["files"] >= 2
    requests = len(seen)
    assert requests == 1 + 1 + 8 * 1 + 2  # card, questions, one answer each, a retry for each refused answer
    with scripted_openai(teacher) as (url, seen):
        again = create(url, base)
    assert again.exit_code == 0, again.text
    assert json.loads(again.stdout)["steps_done_before"] == ["card", "questions", "answers", "dataset", "adapter",
                                                             "knowledge"]  # fmt: skip
    assert seen == []  # nothing asked twice


def test_unreachable_endpoint_then_interrupted_answers_then_resume(create_env, tmp_path: Path):
    settings, base = create_env
    with scripted_openai(teacher) as (url, _):
        pass
    down = create(url, base)
    assert down.exit_code != 0 and "cannot reach the LLM endpoint" in down.text
    assert not (settings.data_dir / "characters" / "chacha").exists()
    with scripted_openai(lambda body: teacher(body, fail={"answers"})) as (url, seen):
        failing = create(url, [*base, "--min-answers", "3"])
    assert failing.exit_code != 0 and "only 0 usable answers" in failing.text
    assert (settings.data_dir / "characters" / "chacha" / "card.yaml").is_file()
    state = json.loads((settings.data_dir / "create" / "chacha" / "state.json").read_text())
    assert state["done"] == ["card", "questions"]
    with scripted_openai(teacher) as (url, seen):
        result = create(url, base)
    assert result.exit_code == 0, result.text
    kinds = [r["messages"][0]["content"][:40] for r in seen]
    assert not any("character cards" in k or "interview questions" in k for k in kinds)  # card and questions kept
    assert json.loads(result.stdout)["answers_kept"] == 6


def test_malformed_card_falls_back_and_existing_folders_are_safe(create_env):
    settings, base = create_env
    (settings.data_dir / "characters" / "taken").mkdir(parents=True)
    with scripted_openai(lambda body: teacher(body, fail={"card"})) as (url, _):
        taken = create(url, [*base, "--id", "taken"])
        assert taken.exit_code != 0 and "already exists" in taken.text
        result = create(url, [*base, "--no-knowledge"])
    assert result.exit_code == 0, result.text
    report = json.loads(result.stdout)
    assert report["card_source"].startswith("plain card") and report["malformed"] == {"card: no JSON": 2}
    assert any("edit card.yaml" in n for n in report["notes"])
    card = yaml.safe_load((Path(report["folder"]) / "card.yaml").read_text(encoding="utf-8"))
    assert card["description"].startswith("{{char}}是茶茶。茶茶是山脚下") and card["first_mes"] == "你好，我是茶茶。"
    assert report["knowledge"] == {}
