"""The commands end to end, and one run on the real embedded Gemma-3-270M that chat then uses."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from companion.cli import app
from companion.errors import InputFileError
from training.lora.config import TrainConfig

from .conftest import Quiet

runner = CliRunner()


def test_every_setting_is_a_flag():
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    for name in TrainConfig.model_fields:
        assert "--" + name.replace("_", "-") in result.output, name


def test_flags_and_config_file(tmp_path, character, settings):
    config_file = tmp_path / "cfg.yaml"
    config_file.write_text("lora_rank: 16\nlearning_rate: 0.001\n")
    args = ["train", "tiny", "--show-config", "--config-file", str(config_file), "--learning-rate", "0.003",
            "--no-share-prefix", "--data-dir", str(settings.data_dir)]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["lora_rank"] == 16 and shown["learning_rate"] == 0.003 and shown["share_prefix"] is False
    bad = runner.invoke(app, ["train", "tiny", "--show-config", "--precision", "fp8"])
    assert bad.exit_code != 0 and "precision" in bad.output


def test_train_and_eval_commands(tmp_path, character, settings, tiny_model_dir):
    env = {"COMPANION_DATA_DIR": str(settings.data_dir), "COMPANION_CHARACTERS_DIR": str(character.folder.parent)}
    args = ["train", "tiny", "--model", str(tiny_model_dir), "--precision", "fp32", "--max-steps", "2",
            "--batch-size", "4", "--grad-accum", "1", "--eval-every", "0", "--save-every", "0"]  # fmt: skip
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    assert "adapter written" in result.output and character.has_adapter()
    args = ["eval", "tiny", "--model", str(tiny_model_dir), "--max-new-tokens", "3", "--json", "--probes"]
    probes = tmp_path / "probes.txt"
    probes.write_text("Hi\n# a comment\n你好\n")
    result = runner.invoke(app, [*args, str(probes)], env=env)
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output[result.output.index("{") :])
    assert metrics["format"]["adapter"]["replies"] == 2 and "lines_perplexity_reduction" in metrics["perplexity"]
    assert (character.adapter_dir / "eval.md").is_file()


def test_missing_dataset_is_a_clean_error(tmp_path, settings):
    folder = tmp_path / "chars" / "empty"
    folder.mkdir(parents=True)
    (folder / "card.yaml").write_text("name: Empty\n")
    env = {"COMPANION_DATA_DIR": str(settings.data_dir), "COMPANION_CHARACTERS_DIR": str(folder.parent)}
    result = runner.invoke(app, ["train", "empty", "--max-steps", "1"], env=env)
    assert isinstance(result.exception, InputFileError)  # `companion` prints it without a traceback
    assert result.exception.path == folder / "dataset" / "train.jsonl"
    assert "companion data build empty" in str(result.exception)


@pytest.mark.slow
def test_embedded_model_adapter_is_used_by_chat(character, settings):
    """Two steps on Gemma-3-270M; the adapter loads in the chat runtime and changes its output."""
    from companion.llm.base import GenerationParams, GenerationRequest
    from companion.llm.local import LocalLLM, LocalLLMSettings
    from companion.messages import ChatMessage
    from companion.plugins import PluginContext
    from training.lora.trainer import Trainer

    config = TrainConfig(max_steps=2, batch_size=4, grad_accum=1, learning_rate=2e-3, eval_every=0, save_every=0)
    report = Trainer(character, settings, config, progress=Quiet()).run().report
    adapter_config = json.loads((character.adapter_dir / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == "gemma3-270m"
    assert "companion_base_architecture" not in adapter_config  # peft would warn about it
    info = json.loads((character.adapter_dir / "companion_adapter.json").read_text())
    assert info["base_architecture"] == "gemma3_text"
    assert report["environment"]["precision"] in ("bf16", "fp32")
    assert report["metrics"]["computed_tokens"] < report["metrics"]["sample_tokens"]

    llm = LocalLLM(LocalLLMSettings(model="gemma3-270m"), PluginContext(data_dir=settings.data_dir))
    messages = [ChatMessage(role="user", content="Hi")]
    params = GenerationParams(max_new_tokens=6, temperature=0.0)

    async def reply(adapter):
        return "".join(
            [p async for p in llm.stream(GenerationRequest(messages=messages, params=params, adapter=adapter))]
        )

    with_adapter = asyncio.run(reply(character.adapter_dir))
    assert isinstance(with_adapter, str)
    assert llm._adapters  # attached through the runtime's own check and loader
