"""`companion knowledge ...` as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from companion.cli import app
from companion.errors import InputFileError
from tests.knowledge.test_lorebook import ST_WORLD

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_build_query_status_and_clear(character, tmp_path: Path) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--config", str(write_config(tmp_path, character))]
    built = invoke("knowledge", "build", "xiaomai", "--json", *common)
    assert built.exit_code == 0, built.output
    report = json.loads(built.stdout)
    assert len(report["indexed"]) == 4 and report["totals"]["line"] == 4
    assert "chat.jsonl" in " ".join(report["warnings"])

    again = invoke("knowledge", "build", "xiaomai", *common)
    assert "0 indexed, 4 unchanged" in " ".join(again.stdout.split())

    hits = json.loads(invoke("knowledge", "query", "xiaomai", "芝士最怕什么？", "--json", "-k", "2", *common).stdout)
    assert hits["query"] == "芝士最怕什么？" and len(hits["hits"]) == 4
    top = hits["hits"][0]
    assert set(top) >= {"text", "score", "source", "kind"} and "吸尘器" in top["text"] and top["kind"] == "lore"
    lines = json.loads(invoke("knowledge", "query", "xiaomai", "收银台", "--kind", "line", "--json", *common).stdout)
    assert all(h["kind"] == "line" for h in lines["hits"])
    printed = invoke("knowledge", "query", "xiaomai", "灯塔", *common).stdout
    assert "lore/town.md" in printed

    status = json.loads(invoke("knowledge", "status", "xiaomai", "--json", *common).stdout)
    assert status["files"] == 4 and status["chunks"]["line"] == 4

    context = json.loads(invoke("knowledge", "context", "xiaomai", "灯塔看守人是谁？", "--json", *common).stdout)
    assert {"lorebook", "knowledge"} <= {b["kind"] for b in context["blocks"]}

    assert invoke("knowledge", "clear", "xiaomai", *common).exit_code == 0
    assert json.loads(invoke("knowledge", "status", "xiaomai", "--json", *common).stdout)["files"] == 0


def test_lorebook_import_and_test(character, tmp_path: Path) -> None:
    common = ["--data-dir", str(tmp_path / "data"), "--config", str(write_config(tmp_path, character))]
    world = tmp_path / "world.json"
    world.write_text(json.dumps(ST_WORLD), encoding="utf-8")
    result = invoke("knowledge", "lorebook", "import", "xiaomai", str(world), *common)
    assert result.exit_code == 0 and "2 entries imported; the lorebook has 4" in result.stdout
    fired = json.loads(invoke("knowledge", "lorebook", "test", "xiaomai", "Sesame the cat", "--json", *common).stdout)
    assert [row["entry"] for row in fired] == ["Sesame"] and fired[0]["position"] == "at_depth"
    plain = invoke("knowledge", "lorebook", "test", "xiaomai", "去灯塔", *common).stdout
    assert "The lighthouse is red and white." in plain
    bad = tmp_path / "bad.json"
    bad.write_text("{", encoding="utf-8")
    failed = runner.invoke(app, ["knowledge", "lorebook", "import", "xiaomai", str(bad), *common])
    assert isinstance(failed.exception, InputFileError) and "bad.json" in str(failed.exception)


def test_memory_export_and_delete(character, tmp_path: Path, e5) -> None:
    from companion.plugins import PluginContext
    from knowledge.memory import MemoryStore
    from knowledge.store import ChromaStore

    data = tmp_path / "data"
    common = ["--data-dir", str(data), "--config", str(write_config(tmp_path, character))]
    MemoryStore("xiaomai", e5, ChromaStore(context=PluginContext(data_dir=data))).remember("qq:42", "我怕打雷。")
    listed = json.loads(invoke("knowledge", "memory", "list", "xiaomai", "--json", *common).stdout)
    assert listed == [{"user_id": "qq:42", "memories": 1}]
    out = tmp_path / "export.json"
    invoke("knowledge", "memory", "export", "xiaomai", "qq:42", "-o", str(out), *common)
    assert json.loads(out.read_text(encoding="utf-8"))["memories"][0]["text"] == "我怕打雷。"
    assert "deleted 1 memories" in invoke("knowledge", "memory", "delete", "xiaomai", "qq:42", "--yes", *common).stdout
    assert json.loads(invoke("knowledge", "memory", "export", "xiaomai", "qq:42", *common).stdout)["memories"] == []


def write_config(tmp_path: Path, character) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'characters_dir = "{character.folder.parent.as_posix()}"\n', encoding="utf-8")
    return config
