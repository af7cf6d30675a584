"""A turn end to end with the real model: events, history, greeting, interruption."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from companion.character import new_character
from companion.events import TextDeltaEvent, TurnEndEvent
from companion.history import HistoryStore
from companion.reply_filter import ReplyFilter
from companion.session import Companion, clean_reply

pytestmark = pytest.mark.slow


@pytest.fixture
def companion(local_llm, settings, tmp_path: Path) -> Companion:
    character = new_character(tmp_path / "chars", "tester", "Tester")
    return Companion(
        character=character,
        settings=settings,
        llm=local_llm,
        history=HistoryStore(settings.data_dir / "history.sqlite3"),
    )


def run_turn(companion: Companion, key, text: str) -> list:
    async def go() -> list:
        return [event async for event in companion.turn(key, text)]

    return asyncio.run(go())


def test_turn_streams_deltas_then_ends_and_records_history(companion: Companion) -> None:
    key = companion.key(user="alice")
    assert companion.greeting(key) == "Hi, I'm Tester."
    assert companion.greeting(key) is None  # only once per conversation
    events = run_turn(companion, key, "Hello!")
    deltas = [e for e in events if isinstance(e, TextDeltaEvent)]
    end = events[-1]
    assert isinstance(end, TurnEndEvent) and len(deltas) >= 2
    assert {e.turn_id for e in events} == {end.turn_id}
    assert end.text == clean_reply("".join(d.text for d in deltas), "Tester")
    history = companion.history.load(key)
    assert [m.role for m in history] == ["assistant", "user", "assistant"]
    assert history[1].content == "Hello!" and history[2].content == end.text
    # Another user's conversation is untouched.
    assert companion.history.load(companion.key(user="bob")) == []


def test_interrupted_turn_keeps_what_was_said(companion: Companion) -> None:
    key = companion.key(user="carol")

    async def interrupt_after_two() -> list[str]:
        seen = []
        stream = companion.turn(key, "Tell me a long story.")
        async for event in stream:
            if isinstance(event, TextDeltaEvent):
                seen.append(event.text)
                if len(seen) == 2:
                    break
        await stream.aclose()
        return seen

    seen = asyncio.run(interrupt_after_two())
    history = companion.history.load(key)
    assert history[0].content == "Tell me a long story."
    assert history[-1].role == "assistant" and history[-1].content == clean_reply("".join(seen), "Tester")


@pytest.mark.parametrize(
    ("pieces", "shown"),
    [
        (["[St", "art a new", " chat]", "\n你好呀"], "你好呀"),  # copied from the prompt: dropped
        (["[start a new chat] Hi"], "Hi"),
        (["[Sta", "rs are out", " tonight]"], "[Stars are out tonight]"),
        (["[", "joy] Hi"], "[joy] Hi"),
        (["[Start"], "[Start"),  # the reply ended while it could still have been the marker
    ],
)
def test_the_new_chat_marker_is_not_part_of_her_reply(pieces: list[str], shown: str) -> None:
    async def stream():
        for piece in pieces:
            yield piece

    async def collect() -> str:
        return "".join([piece async for piece in ReplyFilter("Mochi").stream(stream())])

    assert asyncio.run(collect()) == shown


def test_clean_reply_drops_a_leading_name() -> None:
    assert clean_reply("  Mochi： 你好呀 ", "Mochi") == "你好呀"
    assert clean_reply("Mochizuki is here", "Mochi") == "Mochizuki is here"


def test_character_adapter_is_applied(companion: Companion, local_llm, tmp_path: Path) -> None:
    from tests.test_llm import make_adapter

    key = companion.key(user="dave")
    without = run_turn(companion, key, "Hi there")[-1].text
    companion.reset(key)
    make_adapter(local_llm, companion.character.adapter_dir)
    assert companion.character.has_adapter()
    with_adapter = run_turn(companion, key, "Hi there")[-1].text
    assert with_adapter != without
