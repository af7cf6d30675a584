"""`companion data import|build|stats|scrub` end to end, through the Typer app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from companion.errors import CompanionError, InputFileError

runner = CliRunner()


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("COMPANION_DATA_DIR", str(tmp_path / "data"))
    from companion.cli.data import app as data_app

    return data_app


def test_import_me_to_sharegpt_file(app, fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "me.jsonl"
    result = runner.invoke(app, ["import", str(fixtures / "memotrace_utf8.csv"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "memotrace-csv" in result.output  # says what it detected
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2 and records[0]["conversations"][0] == {"from": "human", "value": "在吗？"}
    assert "<PHONE>" in out.read_text(encoding="utf-8") and "13812345678" not in out.read_text(encoding="utf-8")


def test_import_as_speaker_to_alpaca_and_openai(app, testdata: Path, tmp_path: Path) -> None:
    game = testdata / "vn_scripts" / "renpy_the_question"
    for fmt, key in (("alpaca", "instruction"), ("openai", "messages")):
        out = tmp_path / f"sylvie.{fmt}.jsonl"
        result = runner.invoke(
            app, ["import", str(game), "--as", "Sylvie", "--lang", "schinese", "--to", fmt, "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        first = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
        assert key in first
    assert "我：" not in out.read_text(encoding="utf-8")  # one other speaker: no name labels
    assert "嗨，你好！课上得怎么样？" in out.read_text(encoding="utf-8")


def test_import_into_character_folder(app, mochi: Path, fixtures: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_CHARACTERS_DIR", str(mochi.parent))
    result = runner.invoke(app, ["import", str(fixtures / "qa.jsonl"), "--character", "mochi"])
    assert result.exit_code == 0, result.output
    train = (mochi / "dataset" / "train.jsonl").read_text(encoding="utf-8").splitlines()
    first = json.loads(train[0])
    assert first["conversations"][0]["from"] == "system" and "Mochi" in first["conversations"][0]["value"]
    assert (mochi / "dataset" / "report.md").is_file()


def test_import_conversations_and_errors(app, fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "conv.jsonl"
    result = runner.invoke(app, ["import", str(fixtures / "qq.txt"), "--to", "conversations", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and "<QQ>" in lines[0] and "87654321" not in lines[0]

    no_roles = runner.invoke(app, ["import", str(fixtures / "scene.txt"), "--out", str(tmp_path / "x.jsonl")])
    assert isinstance(no_roles.exception, CompanionError)
    assert "--as" in str(no_roles.exception) and "小麦" in str(no_roles.exception)
    assert not (tmp_path / "x.jsonl").exists()

    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x00\x01\x02")
    unknown = runner.invoke(app, ["import", str(junk), "--out", str(tmp_path / "y.jsonl")])
    assert isinstance(unknown.exception, InputFileError) and "unknown format" in str(unknown.exception)


def test_build_stats_and_plot(app, mochi: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPANION_CHARACTERS_DIR", str(mochi.parent))
    report = tmp_path / "report.json"
    result = runner.invoke(app, ["build", "mochi", "--out", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text(encoding="utf-8"))
    assert data["samples"]["train"] > 300 and data["samples"]["eval"] > 0
    assert {Path(s["path"]).parent.name for s in data["sources"]} == {"dialogues", "scenes"}

    stats_out = tmp_path / "stats.json"
    result = runner.invoke(app, ["stats", "mochi", "--out", str(stats_out)])
    assert result.exit_code == 0, result.output
    stats = json.loads(stats_out.read_text(encoding="utf-8"))
    assert stats["per_speaker"]["assistant"] > 300 and stats["per_format"]["train.jsonl"] > 0
    plot = Path(stats["plot"])
    assert plot.read_bytes().startswith(b"\x89PNG")


def test_stats_of_a_file(app, fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "qq.json"
    result = runner.invoke(
        app, ["stats", str(fixtures / "qq.txt"), "--out", str(out), "--plot", str(tmp_path / "q.png")]
    )
    assert result.exit_code == 0, result.output
    stats = json.loads(out.read_text(encoding="utf-8"))
    assert stats["per_speaker"]["小张"] == 3 and stats["per_source"] == {"qq.txt": 8}
    assert (tmp_path / "q.png").read_bytes().startswith(b"\x89PNG")


def test_scrub_stdin_to_stdout_and_file(app, tmp_path: Path) -> None:
    result = runner.invoke(app, ["scrub"], input="打我13812345678\n价格¥1299\n")
    assert result.exit_code == 0
    assert result.stdout.startswith("打我<PHONE>\n价格¥1299\n")
    source = tmp_path / "in.txt"
    source.write_text("邮箱a@b.com\n", encoding="gb18030")
    out = tmp_path / "out.txt"
    result = runner.invoke(app, ["scrub", str(source), "--out", str(out)])
    assert result.exit_code == 0 and out.read_text(encoding="utf-8") == "邮箱<EMAIL>\n"
