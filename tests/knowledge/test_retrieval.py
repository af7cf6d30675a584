"""A turn's retrieval: lorebook, memory, knowledge and classic lines in one budget, and in a real turn."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from companion.events import ContextEvent, TurnEndEvent
from companion.messages import ChatMessage
from knowledge.retrieval import ContextBuilder
from knowledge.settings import KnowledgeSettings


@pytest.fixture
def builder(character, e5, store, tmp_path: Path) -> ContextBuilder:
    b = ContextBuilder(character, embedder=e5, store=store, cache_dir=tmp_path / "cache")
    b.prepare(build=True)
    return b


def kinds(blocks) -> list[str]:
    return [b.kind for b in blocks]


def test_one_turn_gets_every_kind_within_the_budget(builder: ContextBuilder, e5) -> None:
    builder.memory.remember("alice", "我最喜欢白沙镇的灯塔。")
    recent = [ChatMessage(role="assistant", content="欢迎光临！")]
    out = builder.retrieve(
        "灯塔看守人是谁？芝士最近还在收银台上睡觉吗？",
        user_id="alice",
        recent=recent,
        budget_tokens=400,
        count_tokens=e5.count_tokens,
        user_name="Alice",
    )
    assert set(kinds(out.blocks)) == {"lorebook", "memory", "knowledge", "classic_line"}
    assert out.blocks[0].text == "The lighthouse is red and white." and out.blocks[0].source.startswith("lorebook:")
    assert any("灯塔看守人姓周" in b.text for b in out.blocks if b.kind == "knowledge")
    assert any("收银台" in b.text for b in out.blocks if b.kind == "classic_line")
    assert [b.text for b in out.blocks if b.kind == "memory"] == [b.text for b in out.blocks if "灯塔。" in b.text]
    assert sum(e5.count_tokens(b.text) for b in out.blocks) <= 400
    assert sum(out.tokens.values()) <= 400
    assert out.timings_ms["total"] > 0


def test_budget_is_respected_and_shared_in_order(builder: ContextBuilder, e5) -> None:
    for budget in (0, 20, 60, 150):
        out = builder.retrieve("白沙镇的灯塔和海灯节", user_id="u", budget_tokens=budget, count_tokens=e5.count_tokens)
        assert sum(e5.count_tokens(b.text) for b in out.blocks) <= budget
    assert builder.retrieve("灯塔", user_id="u", budget_tokens=0, count_tokens=e5.count_tokens).blocks == []


def test_small_talk_brings_no_lore(builder: ContextBuilder, e5) -> None:
    out = builder.retrieve("你好呀", user_id="u", budget_tokens=400, count_tokens=e5.count_tokens)
    assert "knowledge" not in kinds(out.blocks)


def test_other_users_memories_never_reach_the_prompt(builder: ContextBuilder, e5) -> None:
    builder.memory.remember("alice", "我的秘密是我怕黑。")
    out = builder.retrieve("我的秘密是什么？我怕什么？", user_id="bob", budget_tokens=400, count_tokens=e5.count_tokens)
    assert not any("怕黑" in b.text for b in out.blocks)
    asyncio.run(builder.remember("bob", "我叫Bob，我怕蜘蛛。", "别怕！"))
    out = builder.retrieve("我怕什么？", user_id="bob", budget_tokens=400, count_tokens=e5.count_tokens)
    memories = [b.text for b in out.blocks if b.kind == "memory"]
    assert memories[0] == "{{user}}'s name is Bob" and any("蜘蛛" in m for m in memories)
    assert asyncio.run(builder.forget("bob")) == 2
    out = builder.retrieve("我怕什么？", user_id="bob", budget_tokens=400, count_tokens=e5.count_tokens)
    assert "memory" not in kinds(out.blocks)


def test_background_build_and_turns_before_it_is_ready(character, e5, store, tmp_path: Path) -> None:
    b = ContextBuilder(character, embedder=e5, store=store, cache_dir=tmp_path / "cache")
    b.ready_wait_s = 0.0
    early = b.retrieve("灯塔看守人是谁？", user_id="u", budget_tokens=300, count_tokens=e5.count_tokens)
    assert "lorebook" in kinds(early.blocks)  # lorebook and memory never wait for the index
    assert b.wait_ready(timeout=300)
    late = b.retrieve("灯塔看守人是谁？", user_id="u", budget_tokens=300, count_tokens=e5.count_tokens)
    assert "knowledge" in kinds(late.blocks)


def test_auto_build_off_uses_what_is_indexed(character, e5, store, tmp_path: Path) -> None:
    b = ContextBuilder(
        character, embedder=e5, store=store, settings=KnowledgeSettings(auto_build=False), cache_dir=tmp_path / "cache"
    )
    out = b.retrieve("灯塔看守人是谁？", user_id="u", budget_tokens=300, count_tokens=e5.count_tokens)
    assert "knowledge" not in kinds(out.blocks) and "lorebook" in kinds(out.blocks)


@pytest.fixture
def companion(character, tmp_path: Path, local_llm, settings):
    """The session pipeline with the embedded LLM and this character's retrieval."""
    from companion.session import Companion, history_store

    settings.characters_dir = character.folder.parent
    builder = ContextBuilder.for_character(character, settings)
    builder.prepare(build=True)
    return Companion(
        character=character,
        settings=settings,
        llm=local_llm,
        history=history_store(settings),
        context_sources=[builder],
    )


def run_turn(companion, key, text: str) -> list:
    async def turn() -> list:
        return [event async for event in companion.turn(key, text, user_name="Alice")]

    return asyncio.run(turn())


@pytest.mark.slow
def test_a_real_turn_shows_and_uses_the_context(companion) -> None:
    """Context event, prompt, memory after the turn."""
    key = companion.key(user="alice", channel="test")
    events = run_turn(companion, key, "我叫爱丽丝。灯塔看守人是谁？")
    context = next(e for e in events if isinstance(e, ContextEvent))
    assert {"lorebook", "knowledge"} <= set(kinds(context.blocks))
    assert isinstance(events[-1], TurnEndEvent)
    prompt, _ = asyncio.run(companion.build_prompt(key, "你还记得我的名字吗？", "Alice"))
    assert "Alice's name is 爱丽丝" in prompt.messages[-1].content
    assert asyncio.run(companion.forget(key)) >= 1


@pytest.mark.slow
def test_a_prepared_prompt_serves_its_turn_once(companion) -> None:
    """The voice loop builds a turn's prompt while the user pauses: that turn takes it as built
    (no second retrieval); a turn with other words, or after the history changed, builds its own."""
    key = companion.key(user="bob", channel="test")

    def context_of(events: list) -> list:
        return next(e for e in events if isinstance(e, ContextEvent)).blocks

    asyncio.run(companion.prepare_prompt(key, "灯塔看守人是谁？", "Alice"))
    prepared = companion._prepared[key][3]
    served = context_of(run_turn(companion, key, "灯塔看守人是谁？"))
    assert served and all(a is b for a, b in zip(served, prepared, strict=True))
    assert key not in companion._prepared  # taken once
    asyncio.run(companion.prepare_prompt(key, "灯塔看守人是谁？", "Alice"))
    unused = companion._prepared[key][3]
    other = context_of(run_turn(companion, key, "芝士在哪里睡觉？"))
    assert key not in companion._prepared and not any(a is b for a in other for b in unused)
    asyncio.run(companion.prepare_prompt(key, "灯塔看守人是谁？", "Alice"))
    companion.record_heard(key, "灯塔——")  # she was interrupted: the history the prompt saw changed
    assert key not in companion._prepared
