"""Card fixtures in the shapes real tools write (SillyTavern V2 export, V3 with assets, V1)."""

from __future__ import annotations

import copy
from typing import Any

ST_ENTRY_EXTENSIONS = {
    "position": 0,
    "exclude_recursion": False,
    "display_index": 0,
    "probability": 100,
    "useProbability": True,
    "depth": 4,
    "selectiveLogic": 0,
    "group": "",
    "group_override": False,
    "prevent_recursion": False,
    "scan_depth": None,
    "match_whole_words": None,
    "case_sensitive": None,
    "automation_id": "",
    "role": 0,
    "vectorized": False,
}

V2_SILLYTAVERN: dict[str, Any] = {
    # SillyTavern writes the V1 fields at the top level too, plus its own bookkeeping keys.
    "name": "Seraphina",
    "description": "{{char}} is a guardian of the forest glade.",
    "personality": "caring, protective",
    "scenario": "{{user}} wakes up in {{char}}'s glade.",
    "first_mes": "*{{char}} smiles.* You're awake, {{user}}.",
    "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: I am {{char}}.\n<START>\n<USER>: Hi\n<BOT>: Hello!",
    "creatorcomment": "Made for testing",
    "avatar": "none",
    "chat": "Seraphina - 2024-1-1 @12h 00m 00s 000ms",
    "talkativeness": "0.5",
    "fav": False,
    "tags": ["fantasy"],
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Seraphina",
        "description": "{{char}} is a guardian of the forest glade.",
        "personality": "caring, protective",
        "scenario": "{{user}} wakes up in {{char}}'s glade.",
        "first_mes": "*{{char}} smiles.* You're awake, {{user}}.",
        "mes_example": "<START>\n{{user}}: Who are you?\n{{char}}: I am {{char}}.\n<START>\n<USER>: Hi\n<BOT>: Hello!",
        "creator_notes": "Made for testing",
        "system_prompt": "{{original}}\nWrite one reply only.",
        "post_history_instructions": "",
        "tags": ["fantasy"],
        "creator": "someone",
        "character_version": "1.2",
        "alternate_greetings": ["Oh! You startled me."],
        "extensions": {
            "talkativeness": "0.5",
            "fav": False,
            "world": "Eldoria",
            "depth_prompt": {"prompt": "", "depth": 4, "role": "system"},
            "some_tool": {"nested": {"keep": [1, 2, 3]}},
        },
        "character_book": {
            "name": "Eldoria",
            "entries": [
                {
                    "id": 0,
                    "keys": ["glade", "forest"],
                    "secondary_keys": [],
                    "comment": "The glade",
                    "content": "The glade is protected by ancient magic.",
                    "constant": False,
                    "selective": True,
                    "insertion_order": 100,
                    "enabled": True,
                    "position": "before_char",
                    "use_regex": True,
                    "extensions": copy.deepcopy(ST_ENTRY_EXTENSIONS),
                },
                {
                    "id": 1,
                    "keys": ["Shadowfang"],
                    "secondary_keys": ["wolf"],
                    "comment": "",
                    "content": "Shadowfangs are corrupted wolves.",
                    "constant": False,
                    "selective": True,
                    "insertion_order": 90,
                    "enabled": True,
                    "position": "after_char",
                    "use_regex": True,
                    "extensions": {**copy.deepcopy(ST_ENTRY_EXTENSIONS), "selectiveLogic": 3, "display_index": 1},
                },
            ],
            "extensions": {},
        },
    },
    "create_date": "2024-1-1 @12h 00m 00s 000ms",
}

V1_TAVERN: dict[str, Any] = {
    "name": "Aqua",
    "description": "A goddess of water.",
    "personality": "proud",
    "scenario": "",
    "first_mes": "I'm Aqua!",
    "mes_example": "<START>\n{{user}}: hi\n{{char}}: Worship me!",
    "metadata": {"version": 1, "created": 1700000000},
}

PYGMALION_V1: dict[str, Any] = {
    "char_name": "Kurisu",
    "char_persona": "A neuroscientist.",
    "world_scenario": "A lab.",
    "char_greeting": "Hello.",
    "example_dialogue": "<START>\nYou: hi\nKurisu: Hmph.",
}


def v3_card(name: str = "Lumi", **data: Any) -> dict[str, Any]:
    return {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": name,
            "description": "A lighthouse keeper's daughter.",
            "tags": ["original"],
            "creator": "tester",
            "character_version": "3",
            "mes_example": "",
            "extensions": {"risu": {"bias": [["x", 1]]}},
            "system_prompt": "",
            "post_history_instructions": "",
            "first_mes": "Hello from {{char}}.",
            "alternate_greetings": [],
            "personality": "quiet",
            "scenario": "",
            "creator_notes": "",
            "group_only_greetings": ["Hi everyone."],
            "nickname": "Lu",
            "creator_notes_multilingual": {"zh": "灯塔看守人的女儿"},
            "source": ["https://example.invalid/lumi"],
            "creation_date": 1700000000,
            "modification_date": 1700000500,
            **data,
        },
    }
