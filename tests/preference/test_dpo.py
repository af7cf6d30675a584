"""DPO on the tiny Gemma-3: exact log-probabilities, the loss at the start, learning, adapter files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.preference.conftest import PAIRS, write_pairs
from tests.training_lora.conftest import Quiet
from training.lora.data import Renderer, SplitStats
from training.lora.loss import PackedLoss
from training.lora.model import load_base
from training.preference.data import read_pairs, tokenize_pairs
from training.preference.evaluate import sequence_logps
from training.preference.trainer import DPOTrainer, train_dpo


def test_packed_sequence_logps_equal_a_plain_forward(character, tiny_settings, tiny_model_dir: Path):
    base = load_base(str(tiny_model_dir), tiny_settings.data_dir, precision="fp32")
    renderer = Renderer(base.tokenizer, character.card, mode="chat", user_name="User", budget_tokens=3000,
                        max_length=512)  # fmt: skip
    pairs = tokenize_pairs(read_pairs(character.folder / "preference" / "pairs.jsonl")[:2], renderer, SplitStats())
    samples = [s for p in pairs for s in (p.chosen, p.rejected)]
    with torch.no_grad():
        packed = sequence_logps(PackedLoss(base.model), samples)
    for sample, value in zip(samples, packed, strict=True):
        ids = torch.tensor([sample.input_ids])
        with torch.no_grad():
            logits = base.model(input_ids=ids).logits[0].float()
        logprobs = torch.log_softmax(logits, -1)
        targets = [j for j in range(1, len(sample)) if sample.kinds[j]]
        expected = sum(float(logprobs[j - 1, sample.input_ids[j]]) for j in targets)
        assert float(value) == pytest.approx(expected, abs=2e-3)
    assert (
        pairs[0].chosen.input_ids[: pairs[0].chosen.first_target]
        == pairs[0].rejected.input_ids[: pairs[0].rejected.first_target]
    )  # the same prompt before both answers


def test_dpo_from_scratch_starts_at_log2_and_learns(character, tiny_settings, dpo_config):
    progress = Quiet()
    result = train_dpo(character, tiny_settings, dpo_config.updated(max_steps=12), progress=progress)
    history = result.history
    assert history["train"][0]["loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference
    assert history["train"][-1]["loss"] < 0.5 * math.log(2)
    m = result.report["metrics"]
    assert m["before"]["pairs"] == len(PAIRS) and result.report["data"]["measured_on"] == "training pairs"
    assert m["after"]["reward_accuracy"] == 1.0 and m["after"]["dpo_loss"] < m["before"].get("dpo_loss", math.log(2))
    assert m["after"]["accuracy"] >= m["before"]["accuracy"]
    assert any("fresh LoRA" in n for n in progress.notes)
    folder = result.adapter_dir
    for name in ("adapter_config.json", "adapter_model.safetensors", "preference_report.json", "dpo_config.json",
                 "train_config.json", "README.md", "dpo_loss_curve.png"):  # fmt: skip
        assert (folder / name).is_file(), name
    assert not (folder / "reference").exists()
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(dpo_config.model)
    assert json.loads((folder / "companion_adapter.json").read_text())["method"] == "dpo"
    assert "Preference accuracy" in (folder / "README.md").read_text()


def test_dpo_on_top_of_the_sft_adapter_keeps_it_as_reference(character, tiny_settings, tiny_model_dir, dpo_config):
    from training.lora.config import TrainConfig
    from training.lora.trainer import train

    sft = TrainConfig(model=str(tiny_model_dir), precision="fp32", max_steps=2, batch_size=4, grad_accum=1,
                      learning_rate=5e-3, eval_every=0, save_every=0)  # fmt: skip
    train(character, tiny_settings, sft, progress=Quiet())
    sft_weights = (character.adapter_dir / "adapter_model.safetensors").read_bytes()
    result = train_dpo(character, tiny_settings, dpo_config, progress=Quiet())
    folder = result.adapter_dir
    assert (folder / "reference" / "adapter_model.safetensors").read_bytes() == sft_weights
    assert (folder / "adapter_model.safetensors").read_bytes() != sft_weights
    assert json.loads((folder / "train_config.json").read_text())["lora_rank"] == sft.lora_rank  # SFT files kept
    assert (folder / "training_report.json").is_file()
    assert result.report["start_adapter"] == str(character.adapter_dir)
    # the runtime loads it like any adapter
    from companion.llm.local import check_adapter_matches, check_adapter_weights

    base = load_base(str(tiny_model_dir), tiny_settings.data_dir, precision="fp32")
    check_adapter_matches(folder / "adapter_config.json", str(tiny_model_dir), base.model.config)
    check_adapter_weights(folder / "adapter_model.safetensors", base.model, str(tiny_model_dir))
    # a second run starts again from the SFT adapter, not from the DPO one
    notes = Quiet()
    again = train_dpo(character, tiny_settings, dpo_config, progress=notes)
    assert any("starting again from its SFT adapter" in n for n in notes.notes)
    assert (again.adapter_dir / "reference" / "adapter_model.safetensors").read_bytes() == sft_weights
    assert again.report["metrics"]["after"]["reward_accuracy"] == result.report["metrics"]["after"]["reward_accuracy"]


def test_held_out_split_and_failure_leaves_the_adapter_alone(character, tiny_settings, dpo_config, monkeypatch):
    write_pairs(character.folder / "preference" / "pairs.jsonl", PAIRS * 2 + [(q + "?", c, r) for q, c, r in PAIRS])
    trainer = DPOTrainer(
        character, tiny_settings, dpo_config.updated(eval_fraction=0.25, max_steps=2), progress=Quiet()
    )
    result = trainer.run()
    assert result.report["data"]["pairs"]["eval"] > 0 and result.report["data"]["measured_on"] == "held-out pairs"
    before = (character.adapter_dir / "adapter_model.safetensors").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("training.preference.trainer.plot_losses", boom, raising=False)
    monkeypatch.setattr("training.lora.report.plot_losses", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        train_dpo(character, tiny_settings, dpo_config.updated(max_steps=1), progress=Quiet())
    assert (character.adapter_dir / "adapter_model.safetensors").read_bytes() == before
    assert not [p for p in character.folder.iterdir() if p.name.startswith(".adapter")]


def test_pairs_too_long_for_max_length_are_refused(character, tiny_settings, dpo_config):
    from companion.errors import InputFileError

    with pytest.raises(InputFileError, match="no usable preference pairs"):
        train_dpo(character, tiny_settings, dpo_config.updated(max_length=16), progress=Quiet())
