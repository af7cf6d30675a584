"""The `companion` command as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from companion.cli import app
from tests.support.cards import V2_SILLYTAVERN

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result


def test_character_new_info_import_export(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    result = invoke("character", "new", "lumi", "--name", "Lumi", "--data-dir", data)
    assert result.exit_code == 0, result.output
    info = invoke("character", "info", "lumi", "--json", "--data-dir", data)
    summary = json.loads(info.stdout)
    assert summary["name"] == "Lumi" and summary["greetings"] == 1 and summary["adapter"] is None

    card = tmp_path / "sera.json"
    card.write_text(json.dumps(V2_SILLYTAVERN), encoding="utf-8")
    imported = invoke("character", "import", str(card), "--data-dir", data)
    assert imported.exit_code == 0 and imported.stdout.strip() == "seraphina"
    again = invoke("character", "import", str(card), "--id", "sera2", "--data-dir", data)
    assert again.stdout.strip() == "sera2"
    info = json.loads(invoke("character", "info", "seraphina", "--json", "--data-dir", data).stdout)
    assert info["lorebook_entries"] == 2 and info["example_blocks"] == 2 and info["avatar"] is False

    out = tmp_path / "sera.png"
    assert (
        invoke("character", "export", "seraphina", "--format", "png", "--out", str(out), "--data-dir", data).exit_code
        == 0
    )
    assert out.read_bytes().startswith(b"\x89PNG")
    listed = invoke("character", "list", "--data-dir", data).stdout
    assert "seraphina" in listed and "lumi" in listed


def test_errors_are_one_clear_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "companion", "character", "import", str(bad), "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "bad.json: invalid JSON at line 1" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(
        [sys.executable, "-m", "companion", "chat", "-c", "nobody", "-m", "hi", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "no character 'nobody'" in proc.stderr


@pytest.mark.slow
def test_chat_message_answers_once_and_history_persists(tmp_path: Path, model_data_dir: Path, monkeypatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (model_data_dir / "models").mkdir(exist_ok=True)
    (data / "models").symlink_to(model_data_dir / "models", target_is_directory=True)
    monkeypatch.setenv("COMPANION_MAX_NEW_TOKENS", "8")
    monkeypatch.setenv("COMPANION_TEMPERATURE", "0")
    first = invoke("chat", "-c", "mochi", "-m", "你好", "--user", "tester", "--data-dir", str(data))
    assert first.exit_code == 0 and first.stdout.strip()
    second = invoke("chat", "-c", "mochi", "-m", "还记得我吗？", "--user", "tester", "--data-dir", str(data))
    assert second.exit_code == 0

    from companion.history import ConversationKey, HistoryStore

    history = HistoryStore(data / "history.sqlite3").load(ConversationKey(character="mochi", user="tester"))
    assert [m.content for m in history if m.role == "user"] == ["你好", "还记得我吗？"]
    assert history[1].content == first.stdout.strip()
