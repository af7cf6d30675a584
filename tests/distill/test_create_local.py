"""`companion create` with the real embedded model: as the writing LLM behind a loopback OpenAI server,
and as the base her adapter is trained on, ending in a real chat reply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from companion.cli import app
from tests.distill.test_create import DOC, teacher
from tests.support.openai_server import scripted_openai, serve_openai

pytestmark = pytest.mark.slow


def run(*args: str, env: dict[str, str] | None = None):
    result = CliRunner().invoke(app, ["create", *args], env=env or {})
    result.text = result.output + str(result.exception or "")
    return result


def test_real_model_as_the_writer(local_llm, settings, tmp_path: Path):
    """Gemma-3-270M (a base model) cannot follow these prompts: whatever it writes is either kept after
    the filters or refused with a reason, and a run with nothing usable stops cleanly, state kept."""
    with serve_openai(local_llm, served_model="gemma3-270m") as (url, seen):
        result = run("--name", "茶茶", "--id", "chacha", "--base-url", url, "--model", "gemma3-270m",
                     "--questions", "1", "--doc-questions", "0", "--max-tokens", "16", "--min-answers", "1",
                     "--steps", "1", "--no-knowledge", "--no-chat", "--data-dir", str(settings.data_dir))  # fmt: skip
    work = settings.data_dir / "create" / "chacha"
    records = [json.loads(x) for x in (work / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1 and len(seen) >= 3  # card (1-2 tries) + answer (1-2 tries)
    if records[0]["answer"] is None:
        assert result.exit_code != 0 and "usable answers" in result.text and "too weak" in result.text
        assert records[0]["reasons"] and "last_output" in records[0]
        assert json.loads((work / "state.json").read_text())["done"] == ["card", "questions"]
    else:
        assert result.exit_code == 0, result.text
    assert (settings.data_dir / "characters" / "chacha" / "card.yaml").is_file()


def test_real_base_model_adapter_and_first_chat(settings, tmp_path: Path):
    doc = tmp_path / "chacha.txt"
    doc.write_text(DOC, encoding="utf-8")
    with scripted_openai(teacher) as (url, _):
        result = run(
            "--name", "茶茶", "--id", "chacha", "--doc", str(doc), "--base-url", url, "--model", "teacher",
            "--questions", "6", "--doc-questions", "2", "--min-answers", "3", "--steps", "1", "-m", "你好呀",
            "--data-dir", str(settings.data_dir),
            env={"COMPANION_MAX_NEW_TOKENS": "8", "COMPANION_TEMPERATURE": "0"},
        )  # fmt: skip
    assert result.exit_code == 0, result.text
    folder = settings.data_dir / "characters" / "chacha"
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "gemma3-270m"
    assert "is ready" in result.stdout and result.stdout.strip().splitlines()[-1]  # her first reply
