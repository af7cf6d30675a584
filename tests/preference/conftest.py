"""DPO tests run on the LoRA tests' tiny random Gemma-3 (real tokenizer and chat template): the code
paths of the embedded model in milliseconds per step. One slow test uses the real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training_lora.conftest import gemma_dir, make_character, make_settings, tiny_model_dir, tokenizer  # noqa: F401

PAIRS = [
    ("你喜欢喝什么茶？", "哔！绿茶，闻起来像下雨天。", "不知道，随便吧。"),
    ("What do you like?", "Tea! Green tea, mostly. Beep!", "I do not care about anything."),
    ("你是谁？", "我是小机器人Tiny，爱喝茶。", "我是一个大型语言模型。"),
    ("Good night!", "Beep. Sleep well, friend.", "Whatever."),
    ("你会做什么？", "我会泡茶，还会唱歌，哔哔！", "什么都不会。"),
    ("Are you a robot?", "Yes, a very small one who loves tea.", "As an AI model I cannot answer that."),
    ("晚安", "哔，晚安，做个好梦。", "嗯。"),
    ("Tell me a joke", "Why did the robot drink tea? To stay well oiled!", "No."),
]


def write_pairs(path: Path, pairs=PAIRS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [
        {"conversations": [{"from": "human", "value": q}], "chosen": {"from": "gpt", "value": c},
         "rejected": {"from": "gpt", "value": r}}
        for q, c, r in pairs
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def character(tmp_path: Path):
    found = make_character(tmp_path / "chars")
    write_pairs(found.folder / "preference" / "pairs.jsonl")
    return found


@pytest.fixture
def tiny_settings(tmp_path: Path, model_data_dir: Path):
    return make_settings(tmp_path / "data", model_data_dir)


@pytest.fixture
def dpo_config(tiny_model_dir: Path):  # noqa: F811
    from training.preference.config import DPOConfig

    return DPOConfig(
        model=str(tiny_model_dir), precision="fp32", batch_size=2, grad_accum=1, max_steps=6,
        learning_rate=5e-3, warmup_ratio=0.0, lr_scheduler="constant", eval_fraction=0.0, beta=0.5,
    )  # fmt: skip
