"""SillyTavern World Info semantics, entry by entry, and World Info JSON import."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from companion.card.model import Lorebook
from companion.errors import InputFileError
from knowledge.lorebook import (
    AND_ALL,
    AND_ANY,
    NOT_ALL,
    NOT_ANY,
    WorldInfo,
    entries_from_lorebook,
    load_world_info,
    lorebook_from_world_info,
    merge_lorebooks,
)
from knowledge.settings import KnowledgeSettings


def book(*entries: dict, **fields) -> Lorebook:
    return Lorebook.model_validate({"entries": list(entries), **fields})


def entry(keys, content, **fields) -> dict:
    return {"keys": keys, "content": content, **fields}


def active(world: WorldInfo, *messages: str, **kwargs) -> list[str]:
    return [a.entry.content for a in world.scan(list(messages), **kwargs)]


def world(*entries: dict, settings: KnowledgeSettings | None = None, **fields) -> WorldInfo:
    return WorldInfo.from_book(book(*entries, **fields), settings, char="Mochi", user="Sam", rng=random.Random(7))


def test_primary_keys_case_insensitive_by_default() -> None:
    w = world(entry(["Lighthouse"], "L"), entry(["灯塔"], "D"), entry(["nothing"], "N"))
    assert active(w, "We walked to the LIGHTHOUSE.") == ["L"]
    assert active(w, "我们去灯塔吧") == ["D"]


def test_case_sensitive_entry_and_global_setting() -> None:
    w = world(entry(["Zhou"], "Z", extensions={"case_sensitive": True}))
    assert active(w, "uncle zhou") == []
    assert active(w, "Uncle Zhou") == ["Z"]
    w = world(entry(["Zhou"], "Z"), settings=KnowledgeSettings(case_sensitive=True))
    assert active(w, "uncle zhou") == []


def test_whole_words_for_latin_but_not_inside_cjk() -> None:
    settings = KnowledgeSettings(match_whole_words=True)
    w = world(entry(["cat"], "C"), entry(["猫"], "M"), entry(["lighthouse keeper"], "K"), settings=settings)
    assert active(w, "a category error") == []
    assert active(w, "the cat, asleep") == ["C"]
    assert active(w, "我的猫咪睡着了") == ["M"]  # Chinese has no spaces: substring match
    assert active(w, "芝麻是cat吗") == ["C"]  # Latin word next to CJK characters
    assert active(w, "the lighthouse keepers") == []
    assert active(w, "ask the lighthouse keeper.") == ["K"]
    w = world(entry(["cat"], "C", extensions={"match_whole_words": False}), settings=settings)
    assert active(w, "category") == ["C"]


def test_regex_keys_slash_form_and_use_regex() -> None:
    w = world(entry(["/birth(day)?s?/i"], "B"), entry([r"\d{4}年"], "Y", use_regex=True))
    assert active(w, "Happy BIRTHDAY!") == ["B"]
    assert active(w, "1998年的烤箱") == ["Y"]
    assert active(w, "a year") == []
    bad = world(entry(["/([unclosed/"], "X"))
    assert active(bad, "([unclosed") == []  # an invalid regex never matches (and never raises)


@pytest.mark.parametrize(
    ("logic", "text", "expected"),
    [
        (AND_ANY, "cat and dog", True),
        (AND_ANY, "cat alone", False),
        (AND_ALL, "cat dog fish", True),
        (AND_ALL, "cat dog", False),
        (NOT_ANY, "cat alone", True),
        (NOT_ANY, "cat and fish", False),
        (NOT_ALL, "cat dog", True),
        (NOT_ALL, "cat dog fish", False),
    ],
)
def test_secondary_key_logic(logic: int, text: str, expected: bool) -> None:
    e = entry(["cat"], "S", secondary_keys=["dog", "fish"], selective=True, extensions={"selectiveLogic": logic})
    assert (active(world(e), text) == ["S"]) is expected


def test_secondary_keys_ignored_unless_selective() -> None:
    e = entry(["cat"], "S", secondary_keys=["dog"], selective=False, extensions={"selectiveLogic": AND_ALL})
    assert active(world(e), "cat") == ["S"]


def test_constant_disabled_and_empty_entries() -> None:
    w = world(
        entry([], "always", constant=True),
        entry(["cat"], "off", enabled=False),
        entry(["cat"], "off too", extensions={"disable": True}),
        entry(["cat"], ""),
    )
    assert active(w, "cat") == ["always"]


def test_decorators() -> None:
    w = world(entry(["never"], "@@activate\nforced"), entry(["cat"], "@@dont_activate\nsuppressed"))
    assert active(w, "cat") == ["forced"]


def test_macros_in_keys() -> None:
    w = world(entry(["{{user}}'s birthday"], "gift"))
    assert active(w, "It's Sam's birthday today") == ["gift"]
    assert [a.entry.content for a in w.scan(["It's Kai's birthday"], user="Kai")] == ["gift"]


def test_scan_depth_book_and_entry_override() -> None:
    chat = ["cat in the oldest message", "something", "something else"]
    w = world(entry(["cat"], "C"), scan_depth=2)
    assert active(w, *chat) == []
    w = world(entry(["cat"], "C"), scan_depth=3)
    assert active(w, *chat) == ["C"]
    w = world(entry(["cat"], "C", extensions={"scan_depth": 5}), scan_depth=1)
    assert active(w, *chat) == ["C"]
    w = world(entry(["cat"], "C"), scan_depth=0)
    assert active(w, "cat") == []


def test_order_and_position_in_the_prompt() -> None:
    w = world(
        entry(["a"], "after-low", insertion_order=1, position="after_char"),
        entry(["a"], "before-high", insertion_order=50, position="before_char"),
        entry(["a"], "before-low", insertion_order=5, position="before_char"),
        entry(["a"], "after-high", insertion_order=90, position="after_char"),
    )
    # per position, ascending order: the highest order sits closest to the end
    assert active(w, "a") == ["before-low", "before-high", "after-low", "after-high"]


def test_token_budget_keeps_highest_order_first() -> None:
    w = world(
        entry(["a"], "low " * 10, insertion_order=1),
        entry(["a"], "mid " * 10, insertion_order=50),
        entry(["a"], "high " * 10, insertion_order=99),
    )
    out = active(w, "a", budget_tokens=25, count_tokens=lambda t: len(t.split()))
    assert [c.split()[0] for c in out] == ["mid", "high"]
    assert len(active(w, "a", budget_tokens=5, count_tokens=lambda t: len(t.split()))) == 0


def test_recursion_prevent_and_exclude() -> None:
    chain = [
        entry(["bakery"], "The bakery belongs to Granny.", insertion_order=30),
        entry(["Granny"], "Granny is 72 and loves the oven.", insertion_order=20),
        entry(["oven"], "The oven is called Big Bear.", insertion_order=10),
    ]
    assert active(world(*chain, recursive_scanning=False), "the bakery") == ["The bakery belongs to Granny."]
    assert len(active(world(*chain, recursive_scanning=True), "the bakery")) == 3
    prevent = [dict(chain[0], extensions={"prevent_recursion": True}), *chain[1:]]
    assert active(world(*prevent, recursive_scanning=True), "the bakery") == ["The bakery belongs to Granny."]
    exclude = [chain[0], dict(chain[1], extensions={"exclude_recursion": True}), chain[2]]
    assert active(world(*exclude, recursive_scanning=True), "the bakery") == ["The bakery belongs to Granny."]
    assert len(active(world(*exclude, recursive_scanning=True), "the bakery and Granny")) == 3
    limited = WorldInfo.from_book(
        book(*chain, recursive_scanning=True), KnowledgeSettings(max_recursion_steps=2), char="M", user="S"
    )
    assert len(active(limited, "the bakery")) == 2


def test_delay_until_recursion() -> None:
    entries = [
        entry(["bakery"], "The bakery belongs to Granny."),
        entry(["Granny", "bakery"], "Delayed note about Granny.", extensions={"delay_until_recursion": True}),
    ]
    assert active(world(*entries, recursive_scanning=True), "the bakery") == [
        "The bakery belongs to Granny.",
        "Delayed note about Granny.",
    ]
    only_delayed = world(entries[1], recursive_scanning=True)
    assert active(only_delayed, "the bakery") == []  # never in the first pass


def test_probability_uses_the_rng() -> None:
    e = entry(["cat"], "sometimes", extensions={"probability": 50, "useProbability": True})
    w = WorldInfo.from_book(book(e), char="M", user="S", rng=random.Random(1))
    hits = sum(bool(active(w, "cat")) for _ in range(200))
    assert 60 < hits < 140
    never = world(entry(["cat"], "never", extensions={"probability": 0, "useProbability": True}))
    assert active(never, "cat") == []
    ignored = world(entry(["cat"], "always", extensions={"probability": 0, "useProbability": False}))
    assert active(ignored, "cat") == ["always"]


def test_inclusion_groups() -> None:
    group = [
        entry(["cat"], "A", extensions={"group": "mood", "group_weight": 100}),
        entry(["cat"], "B", extensions={"group": "mood", "group_weight": 100}),
        entry(["cat"], "solo"),
    ]
    outs = [
        active(WorldInfo.from_book(book(*group), char="M", user="S", rng=random.Random(i)), "cat") for i in range(40)
    ]
    assert all(len(o) == 2 and "solo" in o for o in outs)
    assert {o[0] if o[0] != "solo" else o[1] for o in outs} == {"A", "B"}
    override = [dict(group[0]), dict(group[1], extensions={"group": "mood", "group_override": True})]
    assert active(world(*override), "cat") == ["B"]
    scored = [
        entry(["cat"], "one key", extensions={"group": "g", "use_group_scoring": True}),
        entry(["cat", "dog"], "two keys", extensions={"group": "g", "use_group_scoring": True}),
    ]
    assert active(world(*scored), "cat and dog") == ["two keys"]


def test_delay_needs_a_long_enough_chat() -> None:
    w = world(entry(["cat"], "late", extensions={"delay": 3}), scan_depth=5)
    assert active(w, "cat") == []
    assert active(w, "hi", "hello", "cat") == ["late"]


ST_WORLD = {
    "entries": {
        "0": {
            "uid": 0,
            "key": ["Sesame", "芝麻"],
            "keysecondary": ["cat"],
            "comment": "Sesame",
            "content": "Sesame is a black cat.",
            "constant": False,
            "selective": True,
            "selectiveLogic": 3,
            "order": 150,
            "position": 4,
            "disable": False,
            "excludeRecursion": True,
            "preventRecursion": False,
            "delayUntilRecursion": False,
            "probability": 100,
            "useProbability": True,
            "depth": 2,
            "group": "",
            "groupOverride": False,
            "groupWeight": 100,
            "scanDepth": 6,
            "caseSensitive": True,
            "matchWholeWords": True,
            "sticky": 0,
            "cooldown": 0,
            "delay": 0,
        },
        "1": {
            "uid": 1,
            "key": ["town"],
            "content": "The town is by the sea.",
            "order": 10,
            "position": 0,
            "constant": True,
            "disable": True,
        },
    }
}


def test_import_sillytavern_world_info(tmp_path: Path) -> None:
    path = tmp_path / "Qinglan.json"
    path.write_text(json.dumps(ST_WORLD, ensure_ascii=False), encoding="utf-8")
    lorebook = load_world_info(path)
    assert lorebook.name == "Qinglan" and len(lorebook.entries) == 2
    first, second = lorebook.entries
    assert first.keys == ["Sesame", "芝麻"] and first.secondary_keys == ["cat"] and first.insertion_order == 150
    assert first.extensions["selectiveLogic"] == 3 and first.extensions["position"] == 4
    assert first.extensions["scan_depth"] == 6 and first.extensions["match_whole_words"] is True
    assert second.position == "before_char" and second.enabled is False
    # and it behaves as SillyTavern would
    converted = entries_from_lorebook(lorebook)[0]
    assert converted.logic == AND_ALL and converted.case_sensitive is True and converted.exclude_recursion
    assert converted.position_name == "at_depth" and converted.scan_depth == 6
    w = WorldInfo.from_book(lorebook, char="M", user="S")
    assert active(w, "Sesame the cat") == ["Sesame is a black cat."]
    assert active(w, "sesame the cat") == []  # case-sensitive
    assert active(w, "Sesame the dog") == []  # AND ALL secondary


def test_import_card_json_and_character_book(tmp_path: Path) -> None:
    card = {"spec": "chara_card_v2", "data": {"name": "M", "character_book": {"entries": [entry(["k"], "v")]}}}
    path = tmp_path / "card.json"
    path.write_text(json.dumps(card), encoding="utf-8")
    assert [e.content for e in load_world_info(path).entries] == ["v"]
    bare = lorebook_from_world_info({"entries": [entry(["k"], "v2")]})
    assert bare.entries[0].content == "v2"


def test_import_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"entries": {', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"broken\.json"):
        load_world_info(path)
    path.write_text('{"name": "x"}', encoding="utf-8")
    with pytest.raises(InputFileError, match="entries"):
        load_world_info(path)


def test_merge_renumbers_colliding_ids() -> None:
    base = book(dict(entry(["a"], "A"), id=0), dict(entry(["b"], "B"), id=1))
    extra = book(dict(entry(["c"], "C"), id=0))
    merged = merge_lorebooks(base, extra)
    assert [e.id for e in merged.entries] == [0, 1, 2]
    assert merge_lorebooks(None, extra) is extra
