"""The dialogue model plugins with the real embedded Gemma-3-270M: streaming, stops, adapters, HTTP."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import pytest

from companion.config import PluginSpec
from companion.errors import CompanionError, InputFileError
from companion.llm.base import GenerationParams, GenerationRequest, StopStringFilter
from companion.llm.openai_compatible import OpenAICompatibleLLM, OpenAISettings
from companion.messages import ChatMessage
from companion.plugins import PluginContext, available, create
from tests.support.openai_server import serve_openai

pytestmark = pytest.mark.slow

MESSAGES = [
    ChatMessage(role="system", content="You are Mochi, a baker in a seaside town."),
    ChatMessage(role="user", content="Tell me about your bakery."),
]


def collect(llm, request: GenerationRequest) -> list[str]:
    async def run() -> list[str]:
        return [piece async for piece in llm.stream(request)]

    return asyncio.run(run())


def greedy(max_new_tokens: int = 12, stop: list[str] | None = None) -> GenerationParams:
    return GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0, stop=stop or [])


def test_builtin_plugins_register_through_entry_points() -> None:
    assert {"local", "openai"} <= set(available("llm"))


def test_local_streams_tokens_as_they_are_generated(local_llm) -> None:
    pieces = collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(12)))
    assert len(pieces) >= 4, pieces
    assert all(isinstance(p, str) and p for p in pieces)
    text = "".join(pieces)
    assert "<start_of_turn>" not in text and "<end_of_turn>" not in text
    # Greedy decoding is deterministic: the same request gives the same text.
    assert "".join(collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(12)))) == text


def test_local_counts_tokens_with_its_tokenizer(local_llm) -> None:
    assert local_llm.count_tokens("夏娜喜欢吃蜜瓜包") == 7  # the figure models.md reports for this tokenizer
    assert local_llm.count_tokens("") == 0


def test_chat_template_and_end_of_turn(local_llm) -> None:
    ids = local_llm.prompt_ids(GenerationRequest(messages=MESSAGES))
    text = local_llm.tokenizer.decode(ids[0])
    assert text.startswith("<bos><start_of_turn>user\nYou are Mochi")
    assert text.endswith("<start_of_turn>model\n")
    assert local_llm.tokenizer.convert_tokens_to_ids("<end_of_turn>") in local_llm.end_of_turn_ids()


def test_stop_string_ends_generation_and_is_not_emitted(local_llm) -> None:
    full = "".join(collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(16))))
    stop = full.strip().split()[2]  # a word the model is known to produce
    text = "".join(collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(16, [stop]))))
    assert stop not in text and full.startswith(text)


def test_closing_the_stream_cancels_generation(local_llm) -> None:
    async def first_piece_then_close() -> str:
        stream = local_llm.stream(GenerationRequest(messages=MESSAGES, params=greedy(200)))
        piece = await stream.__anext__()
        await stream.aclose()
        return piece

    before = threading.active_count()
    assert asyncio.run(first_piece_then_close())
    assert threading.active_count() <= before  # the generation thread has finished
    # The model is free again straight away.
    assert collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(3)))


def test_stop_filter_holds_back_partial_matches() -> None:
    stops = StopStringFilter(["\nUser:"])
    out = "".join(stops.feed(p) for p in ["Hi", "\n", "Us", "ually fine"]) + stops.flush()
    assert out == "Hi\nUsually fine" and not stops.stopped
    stops = StopStringFilter(["\nUser:"])
    out = "".join(stops.feed(p) for p in ["Bye", "\nUs", "er: more"]) + stops.flush()
    assert out == "Bye" and stops.stopped


def make_adapter(local_llm, folder: Path) -> Path:
    """A real (untrained) LoRA adapter for the embedded base, saved the way peft saves it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(local_llm.model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "gemma3-270m"
    (folder / "adapter_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def adapter_dir(local_llm, tmp_path_factory) -> Path:
    return make_adapter(local_llm, tmp_path_factory.mktemp("adapter") / "adapter")


def test_adapter_changes_output_and_can_be_switched_off(local_llm, adapter_dir: Path) -> None:
    base = "".join(collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(8))))
    adapted = "".join(collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(8), adapter=adapter_dir)))
    assert adapted != base
    again = "".join(collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(8))))
    assert again == base


def test_corrupt_or_mismatched_adapter_is_refused(local_llm, adapter_dir: Path, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt"
    shutil.copytree(adapter_dir, corrupt)
    (corrupt / "adapter_model.safetensors").write_bytes(b"not safetensors at all")
    with pytest.raises(InputFileError, match=r"corrupt/adapter_model\.safetensors"):
        collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(2), adapter=corrupt))

    other_base = tmp_path / "other"
    shutil.copytree(adapter_dir, other_base)
    config = json.loads((other_base / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "smollm2-135m"
    (other_base / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(InputFileError, match=r"other/adapter_config\.json: adapter was trained on smollm2-135m"):
        collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(2), adapter=other_base))

    wrong_shape = tmp_path / "shape"
    shutil.copytree(adapter_dir, wrong_shape)
    from safetensors.torch import load_file, save_file

    tensors = {
        k: v[:, :3].contiguous() if v.dim() == 2 and "lora_A" in k else v
        for k, v in load_file(adapter_dir / "adapter_model.safetensors").items()
    }
    save_file(tensors, wrong_shape / "adapter_model.safetensors")
    with pytest.raises(InputFileError, match=r"shape/adapter_model\.safetensors: adapter does not load"):
        collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(2), adapter=wrong_shape))
    # The good adapter and the base still work afterwards.
    assert collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(2), adapter=adapter_dir))


def test_openai_plugin_streams_over_real_http(local_llm, tmp_path: Path) -> None:
    with serve_openai(local_llm, served_model="mochi") as (base_url, seen):
        llm = create(
            "llm",
            PluginSpec(plugin="openai", base_url=base_url, model="mochi", api_key="sk-test"),
            PluginContext(data_dir=tmp_path),
        )
        assert isinstance(llm, OpenAICompatibleLLM)
        pieces = collect(llm, GenerationRequest(messages=MESSAGES, params=greedy(10, ["\nUser:"])))
        local = collect(local_llm, GenerationRequest(messages=MESSAGES, params=greedy(10, ["\nUser:"])))
        assert len(pieces) > 1 and "".join(pieces) == "".join(local)
        body = seen[0]["body"]
        assert body["model"] == "mochi" and body["stream"] is True and body["stop"] == ["\nUser:"]
        assert body["messages"][0] == {"role": "system", "content": MESSAGES[0].content}
        assert seen[0]["authorization"] == "Bearer sk-test"

        wrong = OpenAICompatibleLLM(OpenAISettings(base_url=base_url, model="nobody"), PluginContext(tmp_path))
        with pytest.raises(CompanionError, match="answered 404"):
            collect(wrong, GenerationRequest(messages=MESSAGES, params=greedy(2)))


def test_openai_plugin_unreachable_server_fails_fast(tmp_path: Path) -> None:
    llm = OpenAICompatibleLLM(OpenAISettings(base_url="http://127.0.0.1:9/v1", timeout=3), PluginContext(tmp_path))
    with pytest.raises(CompanionError, match="cannot reach the LLM server"):
        collect(llm, GenerationRequest(messages=MESSAGES, params=greedy(2)))
    assert llm.count_tokens("你好 world") >= 3


def test_smollm2_is_selectable_by_name(model_data_dir: Path) -> None:
    from companion.llm.local import LocalLLM, LocalLLMSettings

    llm = LocalLLM(LocalLLMSettings(model="smollm2-135m"), PluginContext(data_dir=model_data_dir))
    request = GenerationRequest(
        messages=[ChatMessage(role="user", content="What is the capital of France?")], params=greedy(12)
    )
    text = "".join(collect(llm, request))
    assert "Paris" in text
    assert "<|im_start|>" in llm.tokenizer.decode(llm.prompt_ids(request)[0])
