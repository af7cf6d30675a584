"""The dataset as the model sees it: the inference chat template, loss on her words only."""

from __future__ import annotations

import json

import pytest

from companion.errors import InputFileError
from companion.messages import ChatMessage
from companion.prompt import assemble, persona_prompt
from training.lora.data import CONTENT, END, Example, Renderer, SplitStats, find_dataset, prepare, read_files

from .conftest import write_dialogues


def renderer(tokenizer, character, mode="chat", max_length=2048):
    return Renderer(tokenizer, character.card, mode=mode, user_name="Ann", budget_tokens=1800, max_length=max_length)


def turns(*pairs):
    return [ChatMessage(role=role, content=text) for role, text in pairs]


def test_learned_tokens_are_her_words_and_end_marker(tokenizer, character):
    r = renderer(tokenizer, character, mode="persona")
    messages = r.messages(
        Example(
            None, turns(("user", "Hi"), ("assistant", "Beep! Hello."), ("user", "Tea?"), ("assistant", "Always!")), "t"
        )
    )
    ids, kinds = r.tokenize(messages)
    # the pieces, joined, are exactly the chat template's text
    assert tokenizer.decode(ids) == tokenizer.apply_chat_template([m.model_dump() for m in messages], tokenize=False)
    learned = tokenizer.decode([t for t, k in zip(ids, kinds, strict=True) if k == CONTENT])
    assert learned == "Beep! Hello.Always!"
    ends = [tokenizer.convert_ids_to_tokens(t) for t, k in zip(ids, kinds, strict=True) if k == END]
    assert ends.count("<end_of_turn>") == 2  # she learns to stop
    context = tokenizer.decode([t for t, k in zip(ids, kinds, strict=True) if k == 0])
    assert "Hi" in context and "Tea?" in context and "robot who loves tea" in context


def test_training_prompt_is_the_inference_prompt(tokenizer, character):
    """In chat mode the tokens before her last reply are what `companion chat` sends."""
    r = renderer(tokenizer, character, mode="chat")
    history = turns(("user", "Hi"), ("assistant", "Beep! Hello."), ("user", "Tea?"))
    messages = r.messages(Example(None, [*history, ChatMessage(role="assistant", content="Always!")], "t"))
    ids, kinds = r.tokenize(messages)
    chat = assemble(
        character.card,
        history[:-1],
        "Tea?",
        user_name="Ann",
        count_tokens=r.count_tokens,
        budget_tokens=1800,
    )
    text = tokenizer.apply_chat_template(
        [m.model_dump() for m in chat.messages], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(text, add_special_tokens=False).input_ids  # LocalLLM.prompt_ids
    assert ids[: len(prompt_ids)] == prompt_ids
    assert tokenizer.decode([t for t, k in zip(ids[len(prompt_ids) :], kinds[len(prompt_ids) :], strict=True) if k])
    assert "Stay in character." in text and "Example conversations" in text  # post-history + examples


def test_modes(tokenizer, character):
    example = Example("Custom system.", turns(("user", "Hi"), ("assistant", "Beep!")), "t")
    persona = persona_prompt(character.card, user_name="Ann")
    assert renderer(tokenizer, character, "dataset").messages(example)[0].content == "Custom system."
    assert renderer(tokenizer, character, "persona").messages(example)[0].content == persona
    assert renderer(tokenizer, character, "auto").messages(example)[0].content == "Custom system."
    # auto: a dataset that carries the card's persona (what `companion data build` writes) gets the chat layout
    built = Example(persona, example.turns, "t")
    assert renderer(tokenizer, character, "auto").messages(built)[0].content.startswith(persona)
    assert "Example conversations" in renderer(tokenizer, character, "auto").messages(built)[0].content


def test_greeting_first_and_trailing_user_turns(tokenizer, character):
    r = renderer(tokenizer, character, mode="persona")
    messages = r.messages(
        Example(None, turns(("assistant", "Beep!"), ("user", "Hi"), ("assistant", "Tea?"), ("user", "bye")), "t")
    )
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[-1].content == "Tea?"  # her last words end the sample
    assert r.messages(Example(None, turns(("user", "anyone?")), "t")) is None


def test_too_long_samples_are_shortened_and_counted(tokenizer, character):
    r = renderer(tokenizer, character, mode="persona", max_length=90)
    long = Example(None, turns(*[("user", "word " * 12), ("assistant", "reply " * 12)] * 4), "t")
    stats = SplitStats()
    sample = r.sample(long, stats)
    assert sample is not None and len(sample) <= 90 and sample.truncated
    assert stats.truncated == 1 and stats.turns_dropped_for_length > 0
    tiny = renderer(tokenizer, character, mode="persona", max_length=20)  # not even the prompt fits
    assert tiny.sample(long, stats) is None
    assert stats.dropped_too_long == 1


def test_prepare_splits_and_counts(tokenizer, character):
    data = prepare(character.folder, renderer(tokenizer, character), eval_fraction=0.25, seed=1)
    assert data.files.origin == "corpus"
    assert len(data.train) == 9 and len(data.eval) == 3
    again = prepare(character.folder, renderer(tokenizer, character), eval_fraction=0.25, seed=1)
    assert again.data_hash == data.data_hash  # stable split and tokens
    assert data.stats["train"].target_tokens == sum(s.n_targets for s in data.train)


def test_dataset_folder_wins(tokenizer, character):
    write_dialogues(character.folder / "dataset" / "train.jsonl", [[("human", "a"), ("gpt", "b")]] * 3)
    write_dialogues(character.folder / "dataset" / "eval.jsonl", [[("human", "c"), ("gpt", "d")]])
    files = find_dataset(character.folder)
    assert files.origin == "dataset" and files.eval
    data = prepare(character.folder, renderer(tokenizer, character), eval_fraction=0.5, seed=1)
    assert (len(data.train), len(data.eval)) == (3, 1)


def test_system_message_records_are_read(tmp_path):
    path = tmp_path / "d.jsonl"
    record = {
        "conversations": [
            {"from": "system", "value": "S"},
            {"from": "human", "value": "q"},
            {"from": "gpt", "value": "a"},
        ]
    }
    path.write_text(json.dumps(record) + "\n", encoding="utf-8")
    (example,) = read_files([path])
    assert example.system == "S" and [m.role for m in example.turns] == ["user", "assistant"]


def test_empty_dataset_names_the_file(tmp_path, character):
    path = character.folder / "corpus" / "dialogues" / "chat.jsonl"
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InputFileError, match="empty dataset") as info:
        read_files([path])
    assert info.value.path == path


def test_no_assistant_turns_names_the_file(tmp_path):
    path = tmp_path / "users_only.jsonl"
    write_dialogues(path, [[("human", "hello?")], [("human", "anyone?")]])
    with pytest.raises(InputFileError, match="no assistant turns") as info:
        read_files([path])
    assert info.value.path == path


def test_broken_json_names_file_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}\n{"conv\n')
    with pytest.raises(InputFileError, match="line 2") as info:
        read_files([path])
    assert info.value.path == path


def test_missing_dataset_says_what_to_do(tmp_path):
    with pytest.raises(InputFileError, match="companion data build"):
        find_dataset(tmp_path)
