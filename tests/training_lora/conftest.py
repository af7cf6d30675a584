"""Fixtures for LoRA training tests.

Most tests train a tiny randomly initialised Gemma-3 (2 layers, 64 wide, sliding window 16,
the real 262k-token Gemma tokenizer and chat template): the same code paths as the embedded
Gemma-3-270M (sliding and full attention layers, tied output layer, GQA), in milliseconds per
step. One slow test trains the real embedded model.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY_CARD = """\
name: Tiny
description: "{{char}} is a small robot who loves tea."
personality: cheerful
system_prompt: "You are {{char}}. Reply briefly, in the user's language."
post_history_instructions: "Stay in character."
mes_example: |
  <START>
  {{user}}: Hello?
  {{char}}: Beep! Hello.
first_mes: "Beep! Hello."
"""

DIALOGUES = [
    [("human", "Hi"), ("gpt", "Beep! Hello, friend.")],
    [("human", "你好"), ("gpt", "哔！你好呀。")],
    [
        ("human", "What do you like?"),
        ("gpt", "Tea! Green tea, mostly."),
        ("human", "Why?"),
        ("gpt", "It smells like rain."),
    ],
    [("human", "你喜欢什么？"), ("gpt", "我喜欢喝茶！")],
    [("human", "Good night"), ("gpt", "Beep. Sleep well.")],
    [("human", "晚安"), ("gpt", "哔，晚安。")],
    [("human", "Are you a robot?"), ("gpt", "Yes, a very small one.")],
    [("human", "你是谁？"), ("gpt", "我是小机器人Tiny。")],
    [("gpt", "Beep! Tea time?"), ("human", "Sure"), ("gpt", "Yay! Green or black?")],
    [("human", "喝茶吗？"), ("gpt", "当然要喝！")],
    [("human", "Tell me a joke"), ("gpt", "Why did the robot drink tea? To stay well oiled!")],
    [("human", "你会做什么？"), ("gpt", "我会泡茶，还会唱歌。")],
]


def write_dialogues(path: Path, dialogues) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for turns in dialogues:
            record = {"conversations": [{"from": who, "value": text} for who, text in turns]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def make_character(root: Path, character_id: str = "tiny"):
    from companion.character import Character

    folder = root / character_id
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text(TINY_CARD, encoding="utf-8")
    write_dialogues(folder / "corpus" / "dialogues" / "chat.jsonl", DIALOGUES)
    return Character.load(folder)


def make_settings(data_dir: Path, model_data_dir: Path):
    """Settings with their own data dir, sharing the converted model cache."""
    from companion.config import Settings

    data_dir.mkdir(parents=True, exist_ok=True)
    (model_data_dir / "models").mkdir(parents=True, exist_ok=True)
    if not (data_dir / "models").exists():
        (data_dir / "models").symlink_to(model_data_dir / "models", target_is_directory=True)
    return Settings(data_dir=data_dir, max_new_tokens=12, temperature=0.0)


@pytest.fixture
def character(tmp_path: Path):
    """A small character folder with a dozen bilingual dialogues in corpus/dialogues."""
    return make_character(tmp_path / "chars")


@pytest.fixture(scope="session")
def gemma_dir(model_data_dir: Path) -> Path:
    from companion.llm.embedded import embedded_model_dir

    return embedded_model_dir("gemma3-270m", model_data_dir)


@pytest.fixture(scope="session")
def tokenizer(gemma_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gemma_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A randomly initialised 2-layer Gemma-3 with the real tokenizer, saved as a model folder."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=4096,
        query_pre_attn_scalar=32,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=1,
        tie_word_embeddings=True,
    )
    torch.manual_seed(1234)
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_config(tiny_model_dir: Path):
    """Settings for a quick run on the tiny model (float32, so results compare exactly)."""
    from training.lora.config import TrainConfig

    return TrainConfig(
        model=str(tiny_model_dir),
        precision="fp32",
        max_steps=4,
        batch_size=4,
        grad_accum=1,
        learning_rate=5e-3,
        warmup_ratio=0.25,
        eval_every=2,
        save_every=2,
        eval_fraction=0.2,
    )


class Quiet:
    """A progress sink that records notes (the trainer's warnings) for assertions."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.steps: list[int] = []

    def start(self, total_steps: int, first_step: int) -> None:
        pass

    def update(self, step: int, metrics) -> None:
        self.steps.append(step)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self) -> None:
        pass


@pytest.fixture
def quiet() -> Quiet:
    return Quiet()
