"""Distillation over real HTTP against a scripted OpenAI-compatible server: the happy path, malformed
output retried or dropped with counts, 429/5xx retries, rate limits, fail-fast and resuming."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest

from tests.distill.teacher import kind_of, passage_of, teacher
from tests.support.openai_server import scripted_openai
from training.distill.client import EndpointError, OpenAIChat
from training.distill.pipeline import DistillOptions, Workdir, distill
from training.distill.templates import load_templates, write_templates

NOVEL = "hongloumeng_ch06.txt"


@pytest.fixture
def novel(testdata: Path) -> Path:
    return testdata / "novels" / NOVEL


def ok(body):
    return 200, {}, teacher(body)


def run(url: str, novel: Path, out: Path, templates=None, **options):
    http = {k: options.pop(k) for k in ("rpm", "retries", "backoff_s", "api_key", "model") if k in options}
    client = OpenAIChat(base_url=url, model=http.pop("model", "teacher"), backoff_s=http.pop("backoff_s", 0.05), **http)
    opts = DistillOptions(**{"names": ("刘姥姥",), "questions": 2, **options})
    return distill([novel], out, client, templates or load_templates(), opts)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []


def test_novel_to_roleplay_and_interviews(novel: Path, tmp_path: Path):
    from training.importers.base import ReadOptions
    from training.importers.sft import ShareGPT

    with scripted_openai(ok) as (url, seen):
        report, target = run(url, novel, tmp_path / "out", max_chunks=3)
    assert report.chunks_done == 3 and report.roleplay_kept == 3 and report.answers_kept == 6
    assert report.malformed == {} and report.usage["requests"] == len(seen) == 3 * (1 + 1 + 2)
    scripts = lines(tmp_path / "out" / "roleplay.jsonl")
    assert all("刘姥姥" in s["characters"] for s in scripts)
    assert all(
        line.startswith(("【", *[f"{c}：" for c in s["characters"]])) for s in scripts for line in s["text"].split("\n")
    )
    assert "\\me 说 \\emoji 平静" in scripts[0]["text"]
    interviews = lines(tmp_path / "out" / "interviews.jsonl")
    assert {i["character"] for i in interviews} == {"刘姥姥"} and all(i["action"] == "想了想" for i in interviews)
    conversations = list(ShareGPT().read(target, ReadOptions()))
    assert len(conversations) == report.sharegpt == 9
    for conversation in conversations:
        assert conversation.messages[-1].role == "assistant"
    gpt = [m.text for c in conversations for m in c.messages if m.role == "assistant"]
    assert all(text.startswith("[") and "\\me " in text for text in gpt)
    saved = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert saved["roleplay_kept"] == 3 and "Distillation report" in (tmp_path / "out" / "report.md").read_text()


def test_malformed_output_is_retried_then_dropped_with_counts(novel: Path, tmp_path: Path):
    roles: dict[str, str] = {}  # first chunk seen: two bad outputs then a good one; second: wrong roles always
    tries: dict[str, int] = {}
    answered: set[str] = set()
    wrong_roles = '{"script": [{"speaker": "林黛玉", "line": "你好"}, {"speaker": "贾宝玉", "line": "好"}]}'

    def answer(body):
        kind = kind_of(body)
        passage = passage_of(body["messages"][-1]["content"])
        if kind == "roleplay":
            role = roles.setdefault(passage, "flaky" if not roles else "wrong")
            n = tries[passage] = tries.get(passage, 0) + 1
            if role == "wrong":
                return 200, {}, wrong_roles
            if n == 1:
                return 200, {}, "Sure! Here is the script you asked for."  # no JSON
            if n == 2:
                return 200, {}, '{"script": [{"speaker": "刘姥姥", "line": "太爷们'  # truncated
        if kind == "answer" and "wrong roles" not in answered:
            answered.add("wrong roles")
            return 200, {}, "我来了。\nQ: 然后呢？\nA: 走了。"  # writes the interviewer's part too
        return ok(body)

    with scripted_openai(answer) as (url, _):
        report, _ = run(url, novel, tmp_path / "out", max_chunks=2, attempts=3)
    assert report.malformed["no JSON"] == 1 and report.malformed["truncated JSON"] == 1
    assert report.malformed["unknown speaker"] == 3  # all three tries of the second chunk
    assert report.roleplay_kept == 1 and report.roleplay_dropped == 1
    assert report.malformed["wrong roles"] == 1 and report.answers_kept == 4 and report.retried_malformed == 5
    rejects = lines(tmp_path / "out" / "rejects.jsonl")
    assert sum(r["task"] == "roleplay" for r in rejects) == 5
    kept = lines(tmp_path / "out" / "roleplay.jsonl")
    assert len(kept) == 1 and "林黛玉" not in json.dumps(kept, ensure_ascii=False)
    assert all("Q:" not in i["answer"] for i in lines(tmp_path / "out" / "interviews.jsonl"))
    state = json.loads((tmp_path / "out" / "state.json").read_text())
    assert sorted(v["roleplay"] for v in state["done"].values()) == ["dropped", "kept"]


def test_rate_limit_and_retries_on_429_and_500(novel: Path, tmp_path: Path):
    count = {"n": 0}

    def flaky(body):
        count["n"] += 1
        if count["n"] in (1, 2):
            return 429, {"Retry-After": "0.2"}, '{"error": "slow down"}'
        if count["n"] == 3:
            return 500, {}, '{"error": "oops"}'
        return ok(body)

    with scripted_openai(flaky) as (url, seen):
        started = time.monotonic()
        report, _ = run(url, novel, tmp_path / "out", max_chunks=1, rpm=600, retries=3)
        elapsed = time.monotonic() - started
    assert report.usage["retries"] == 3 and report.chunks_done == 1
    starts = sorted(r["_time"] for r in seen)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.09  # 600 requests a minute: at least 0.1 s apart (clock slack)
    assert elapsed >= 0.4  # two Retry-After: 0.2 waits


def test_unreachable_endpoint_fails_fast_and_resumes(novel: Path, tmp_path: Path):
    out = tmp_path / "out"
    with scripted_openai(ok) as (url, _):
        pass  # the port is closed again
    started = time.monotonic()
    with pytest.raises(EndpointError, match=r"cannot reach the LLM endpoint.*run the same command again"):
        run(url, novel, out, max_chunks=2)
    assert time.monotonic() - started < 5
    assert json.loads((out / "report.json").read_text())["stopped"]
    with scripted_openai(ok) as (url, seen):
        report, _ = run(url, novel, out, max_chunks=2)
    assert report.chunks_done == 2 and len(seen) == 8


def test_interrupted_run_resumes_without_repeating_finished_chunks(novel: Path, tmp_path: Path):
    out = tmp_path / "out"
    budget = {"left": 9}  # chunk 1 and 2 (4 requests each), then the server starts failing

    def failing(body):
        budget["left"] -= 1
        return ok(body) if budget["left"] >= 0 else (503, {}, '{"error": "overloaded"}')

    with scripted_openai(failing) as (url, _):
        report, _ = run(url, novel, out, max_chunks=4, retries=1)
    assert report.chunks_done == 2 and report.chunks_left == 2 and report.requests_failed >= 1
    first = {r["chunk"] for r in lines(out / "roleplay.jsonl")}
    # a torn write: a record of an unfinished chunk, written just before a crash
    with (out / "roleplay.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"chunk": "hongloumeng_ch06.txt:99:ffff", "text": "半截"}) + '\n{"chunk": ')
    with scripted_openai(ok) as (url, seen):
        report, _ = run(url, novel, out, max_chunks=4)
    assert report.chunks_done_before == 2 and report.chunks_done == 2 and report.chunks_left == 0
    assert any("interrupted" in n for n in report.notes)
    asked = {passage_of(r["messages"][-1]["content"])[:20] for r in seen if kind_of(r) == "roleplay"}
    records = lines(out / "roleplay.jsonl")
    assert len(records) == 4 and len({r["chunk"] for r in records}) == 4 and first < {r["chunk"] for r in records}
    assert len(asked) <= 2  # finished chunks were not asked again
    assert all(Workdir(out).done(r["chunk"], "roleplay") for r in records)


def test_refused_key_and_unknown_model_stop_at_once(novel: Path, tmp_path: Path):
    with scripted_openai(lambda body: (401, {}, '{"error": "bad key"}')) as (url, seen):
        with pytest.raises(EndpointError, match="refused the API key"):
            run(url, novel, tmp_path / "a", max_chunks=3, api_key="sk-wrong")
        assert len(seen) <= 2 and seen[0]["_auth"] == "Bearer sk-wrong"  # at most the requests in flight
    with scripted_openai(ok) as (url, seen), pytest.raises(EndpointError, match="does not serve model 'gpt-x'"):
        run(url, novel, tmp_path / "b", max_chunks=3, model="gpt-x")
    assert seen == []


def test_edited_templates_are_used(novel: Path, tmp_path: Path):
    folder = tmp_path / "templates"
    write_templates(folder)
    path = folder / "interview_questions.md"
    path.write_text(
        path.read_text(encoding="utf-8").replace("An interviewer meets", "一位记者 meets"), encoding="utf-8"
    )
    templates = load_templates(folder)
    assert templates.sources["interview_questions"] == str(path) and templates.sources["roleplay"].endswith(".md")
    with scripted_openai(ok) as (url, seen):
        run(url, novel, tmp_path / "out", templates=templates, max_chunks=1, questions=1)
    assert any("一位记者 meets 刘姥姥" in r["messages"][-1]["content"] for r in seen)
