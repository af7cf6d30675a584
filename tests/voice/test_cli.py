"""`companion voice`: a clear error without audio devices; headless runs over recordings."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from companion.cli import app
from companion.voice.audio import write_wav

runner = CliRunner()


def config_file(tmp_path, character, model_data_dir):
    data = tmp_path / "cli-data"
    data.mkdir(exist_ok=True)
    if (model_data_dir / "models").is_dir() and not (data / "models").exists():
        (data / "models").symlink_to(model_data_dir / "models", target_is_directory=True)
    path = tmp_path / "config.toml"
    path.write_text(
        f'data_dir = "{data}"\ncharacters_dir = "{character.folder.parent}"\n'
        '[llm]\nplugin = "openai"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "none"\n',
        encoding="utf-8",
    )
    return path


def test_no_microphone_gives_the_fix(tmp_path, character, model_data_dir):
    try:
        import sounddevice as sd
    except (ImportError, OSError):  # without PortAudio the command names the library to install
        sd = None
    try:
        if sd is None:
            raise ValueError("no PortAudio")
        sd.query_devices(kind="input")
        pytest.skip("this machine has a microphone")
    except (ValueError, getattr(sd, "PortAudioError", ValueError)):
        pass
    result = runner.invoke(
        app, ["voice", "-c", "lumi", "--config", str(config_file(tmp_path, character, model_data_dir))]
    )
    assert result.exit_code != 0
    message = str(result.exception or "") + result.output
    assert ("microphone" in message or "PortAudio" in message) and "--input" in message


@pytest.mark.slow
def test_headless_silence_is_no_turn(tmp_path, character, model_data_dir, speech_dir):
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_wav(inputs / "quiet.wav", np.zeros(16000 * 2, dtype=np.float32), 16000)
    shutil.copy(speech_dir / "fw_hotwords.mp3", inputs / "notes.txt")  # not audio by name: ignored
    out = tmp_path / "out"
    config = config_file(tmp_path, character, model_data_dir)
    result = runner.invoke(
        app, ["voice", "-c", "lumi", "--config", str(config), "--input", str(inputs), "--output", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "quiet.json").read_text(encoding="utf-8"))
    assert summary["transcript"] is None and "no speech" in summary["note"]
    assert not (out / "quiet.reply.wav").exists()
    assert not (out / "notes.json").exists()
