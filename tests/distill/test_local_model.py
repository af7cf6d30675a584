"""The real embedded model as the 'stronger LLM', over a real loopback HTTP server and in-process.

Gemma-3-270M (a base model) cannot write the JSON the templates ask for, so nearly everything
it says is refused; what these tests check is the pipeline: every output is either kept after
validation or refused and counted, and nothing malformed reaches a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.openai_server import serve_openai
from training.distill.client import OpenAIChat
from training.distill.parse import parse_script
from training.distill.pipeline import DistillOptions, distill
from training.distill.templates import load_templates

pytestmark = pytest.mark.slow


def test_real_model_over_http_every_output_accounted_for(local_llm, testdata: Path, tmp_path: Path):
    novel = testdata / "novels" / "hongloumeng_ch06.txt"
    options = DistillOptions(
        names=("刘姥姥",), chunk_chars=200, max_chunks=1, questions=1, attempts=1, max_tokens=16, answer_tokens=16
    )
    with serve_openai(local_llm, served_model="gemma3-270m") as (url, seen):
        client = OpenAIChat(base_url=url, model="gemma3-270m", concurrency=1)
        report, _ = distill([novel], tmp_path / "out", client, load_templates(), options, concurrency=1)
    assert report.usage["requests"] == len(seen) >= 2
    outputs_judged = report.roleplay_kept + report.question_sets + report.answers_kept + sum(report.malformed.values())
    assert outputs_judged == len(seen)
    rejects = [json.loads(x) for x in (tmp_path / "out" / "rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == sum(report.malformed.values())
    kept = tmp_path / "out" / "roleplay.jsonl"
    for record in kept.read_text(encoding="utf-8").splitlines() if kept.is_file() else []:
        script = json.loads(record)
        parse_script(script["text"], passage=novel.read_text(encoding="utf-8"), known=["刘姥姥"])  # still valid
    assert report.chunks_done == 1  # every item finished: kept or dropped, nothing left hanging


def test_in_process_model_and_the_cli_over_loopback(local_llm, testdata: Path, tmp_path: Path):
    from companion.cli import app
    from training.distill.client import PluginChat

    novel = testdata / "novels" / "xiyouji_ch01-02.txt"
    options = DistillOptions(names=("悟空",), chunk_chars=200, max_chunks=1, questions=0, attempts=1, max_tokens=16)
    report, _ = distill([novel], tmp_path / "a", PluginChat(local_llm, "local:gemma3-270m"), load_templates(), options)
    assert report.client.endswith("(in-process)") and report.usage["requests"] == 1
    assert report.roleplay_kept + sum(report.malformed.values()) == 1
    out = tmp_path / "b"
    with serve_openai(local_llm, served_model="gemma3-270m") as (url, seen):
        result = CliRunner().invoke(
            app,
            ["data", "distill", str(novel), "--as", "悟空", "--out", str(out), "--base-url", url,
             "--model", "gemma3-270m", "--max-chunks", "1", "--questions", "0", "--attempts", "1",
             "--max-tokens", "16", "--chunk-chars", "200", "--json", "--data-dir", str(tmp_path / "data")],
        )  # fmt: skip
    assert result.exit_code == 0, result.output + str(result.exception)
    cli_report = json.loads(result.stdout)
    assert cli_report["usage"]["requests"] == len(seen) == 1
    assert cli_report["roleplay_kept"] + sum(cli_report["malformed"].values()) == 1
    assert (out / "state.json").is_file() and (out / "report.md").is_file()
