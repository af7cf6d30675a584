"""Character Card V1, V2 and V3 as JSON objects, to and from our `CardData`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from companion.card.model import CardData

CardVersion = Literal["v1", "v2", "v3"]

V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
# Pygmalion/TavernAI-era names for the same fields.
V1_ALIASES = {
    "char_name": "name",
    "char_persona": "description",
    "world_scenario": "scenario",
    "char_greeting": "first_mes",
    "example_dialogue": "mes_example",
}
V2_REQUIRED = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "extensions",
)
V3_REQUIRED = (*V2_REQUIRED, "group_only_greetings")
V3_ONLY = (
    "assets",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "group_only_greetings",
    "creation_date",
    "modification_date",
)


class CardFormatError(ValueError):
    """The JSON is not a card; the message names the field."""


def detect_version(obj: Any) -> CardVersion:
    if not isinstance(obj, dict):
        raise CardFormatError("a card must be a JSON object")
    spec = obj.get("spec")
    if spec == "chara_card_v3":
        return "v3"
    if spec == "chara_card_v2":
        return "v2"
    if spec is not None:
        raise CardFormatError(f"field 'spec': unknown card spec {spec!r}")
    if "name" in obj or "char_name" in obj:
        return "v1"
    raise CardFormatError("neither 'spec' nor 'name' found: not a character card")


def card_from_json(obj: Any) -> CardData:
    version = detect_version(obj)
    if version == "v1":
        data = {V1_ALIASES.get(key, key): value for key, value in obj.items()}
    else:
        data = obj.get("data")
        if not isinstance(data, dict):
            raise CardFormatError("field 'data': missing or not an object")
    try:
        return CardData.model_validate(data)
    except ValidationError as error:
        raise CardFormatError(describe_validation_error(error, prefix="data" if version != "v1" else "")) from None


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in (prefix, *item["loc"]) if part != "")
        problems.append(f"field '{location}': {item['msg']}")
    return "; ".join(problems)


def _with_required(card: CardData, required: tuple[str, ...]) -> dict[str, Any]:
    full = card.model_dump(mode="json", by_alias=True)
    plain = card.to_plain()
    return {**{key: full[key] for key in required}, **plain}


def card_to_json(card: CardData, version: CardVersion) -> dict[str, Any]:
    if version == "v3":
        return {"spec": "chara_card_v3", "spec_version": "3.0", "data": _with_required(card, V3_REQUIRED)}
    if version == "v2":
        data = {k: v for k, v in _with_required(card, V2_REQUIRED).items() if k not in V3_ONLY}
        # Top-level V1 copies, as SillyTavern writes them, for readers that only know V1.
        return {**{k: data[k] for k in V1_FIELDS}, "spec": "chara_card_v2", "spec_version": "2.0", "data": data}
    plain = card.to_plain()
    extras = {k: v for k, v in plain.items() if k not in CardData.model_fields}
    return {**{k: _with_required(card, V1_FIELDS)[k] for k in V1_FIELDS}, **extras}
