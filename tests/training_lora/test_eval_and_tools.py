"""`companion eval` and the adapter tools, on an adapter trained from the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from companion.errors import InputFileError
from training.lora.evaluate import Evaluator, detect_language, read_probes, render_markdown, write_reports
from training.lora.tools import merge_adapter, vllm_layout
from training.lora.trainer import Trainer

from .conftest import Quiet, make_character, make_settings


@pytest.fixture(scope="module")
def trained(tmp_path_factory, model_data_dir, tiny_model_dir):
    from training.lora.config import TrainConfig

    root = tmp_path_factory.mktemp("trained")
    character = make_character(root / "chars")
    settings = make_settings(root / "data", model_data_dir)
    config = TrainConfig(
        model=str(tiny_model_dir), precision="fp32", max_steps=3, batch_size=4, grad_accum=1, learning_rate=1e-2,
        eval_every=0, save_every=0, eval_fraction=0.2,
    )  # fmt: skip
    Trainer(character, settings, config, progress=Quiet()).run()
    return character, settings, str(tiny_model_dir)


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("你好呀", "zh"),
        ("[joy] 天琴座！Vega 是我找到的第一颗星星", "zh"),
        ("Hi there! I'm Mochi (糯米).", "en"),
        ("[shy] Thunderstorms...", "en"),
        ("こんにちは、元気ですか", "ja"),
        ("안녕하세요", "ko"),
        ("...!!", "none"),
    ],
)
def test_detect_language(text, language):
    assert detect_language(text) == language


def test_eval_compares_base_and_adapter(trained):
    character, settings, model = trained
    result = Evaluator(character, settings, model=model, probes=["Hi", "你好"], max_new_tokens=6).run()
    ppl = result.perplexity
    assert ppl["samples"] == 2 and ppl["adapter"]["line_tokens"] > 0
    assert ppl["adapter"]["lines_perplexity"] < ppl["base"]["lines_perplexity"]  # trained on this very style
    assert set(result.goals) == {"lines_perplexity_reduction", "clean_end_and_language"}
    assert [p.language for p in result.probes] == ["en", "zh"]
    for probe in result.probes:
        for reply in (probe.base, probe.adapter):
            assert reply is not None and reply.tokens <= 6
            assert not any(marker in reply.text for marker in ("<start_of_turn>", "<end_of_turn>"))
    assert result.format["adapter"]["replies"] == 2
    markdown = render_markdown(result)
    assert "Held-out perplexity" in markdown and "Side by side" in markdown and "| Hi |" in markdown
    md, js = write_reports(result, character.adapter_dir)
    data = json.loads(js.read_text())
    assert data["perplexity"]["lines_perplexity_reduction"] == pytest.approx(ppl["lines_perplexity_reduction"])
    assert md.read_text() == markdown


def test_default_probes_include_held_out_questions(trained):
    character, settings, model = trained
    evaluator = Evaluator(character, settings, model=model, max_new_tokens=2)
    result = evaluator.run(perplexity=False, generate=False)
    assert result.perplexity == {} and result.probes == []
    builtin = read_probes(Path(__file__).parents[2] / "training" / "lora" / "probes.txt")
    assert len(builtin) == 24 and sum(detect_language(p) == "zh" for p in builtin) == 12


def test_adapter_for_another_base_is_refused(trained, tmp_path):
    character, settings, _ = trained
    other = tmp_path / "other"
    other.mkdir()
    config = json.loads((character.adapter_dir / "adapter_config.json").read_text())
    config.update(base_model_name_or_path="smollm2-135m")
    (other / "adapter_config.json").write_text(json.dumps(config))
    (other / "adapter_model.safetensors").write_bytes(
        (character.adapter_dir / "adapter_model.safetensors").read_bytes()
    )
    with pytest.raises(InputFileError, match="trained on smollm2-135m, but the model is gemma3-270m") as info:
        Evaluator(character, settings, adapter_dir=other).run(generate=False)  # chat's model: gemma3-270m
    assert info.value.path == other / "adapter_config.json"


def test_merge_gives_the_same_model(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    character, settings, _ = trained
    out = tmp_path / "merged"
    info = merge_adapter(character.adapter_dir, out, settings.data_dir, dtype="fp32")
    assert info["max_logit_difference"] < 1e-3
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base_dir = json.loads((character.adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                                          str(character.adapter_dir))  # fmt: skip
    ids = torch.tensor([[2, 105, 2364, 107, 9259, 106]])
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(out).chat_template  # the merged folder chats like the base
    with pytest.raises(Exception, match="already exists"):
        merge_adapter(character.adapter_dir, out, settings.data_dir)


def test_vllm_layout(trained, tmp_path):
    character, settings, _ = trained
    info = vllm_layout([character], tmp_path / "vllm", settings.data_dir, base_model="google/gemma-3-270m")
    module = tmp_path / "vllm" / "tiny"
    config = json.loads((module / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "google/gemma-3-270m" and config["peft_type"] == "LORA"
    assert (module / "adapter_model.safetensors").read_bytes() == (
        character.adapter_dir / "adapter_model.safetensors"
    ).read_bytes()
    serve = (tmp_path / "vllm" / "serve.sh").read_text()
    assert "--enable-lora" in serve and f"tiny={module.resolve()}" in serve and "--max-lora-rank 8" in serve
    assert 'model = "tiny"' in (tmp_path / "vllm" / "companion.toml").read_text()
    assert info["max_lora_rank"] == 8
