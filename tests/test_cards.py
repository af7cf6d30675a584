"""Character Card V1/V2/V3 in JSON, PNG and CHARX: import, export, round trips, bad input."""

from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from companion.card.examples import parse_examples
from companion.card.formats import card_from_json, card_to_json
from companion.card.macros import apply_original, substitute
from companion.card.png import placeholder_png, read_card_texts, write_png_card
from companion.character import Character, export_card, import_card, load_card_yaml
from companion.errors import CompanionError, InputFileError
from tests.support.cards import PYGMALION_V1, V1_TAVERN, V2_SILLYTAVERN, v3_card


def png_with_chunks(**chunks: dict) -> bytes:
    """A PNG carrying the given cards as base64 tEXt chunks, as SillyTavern writes them."""
    image = placeholder_png()
    body = image[:-12]  # before IEND
    import struct
    import zlib

    for keyword, card in chunks.items():
        payload = keyword.encode() + b"\0" + base64.b64encode(json.dumps(card).encode())
        body += struct.pack(">I", len(payload)) + b"tEXt" + payload
        body += struct.pack(">I", zlib.crc32(b"tEXt" + payload) & 0xFFFFFFFF)
    return body + image[-12:]


def test_v2_sillytavern_png_with_lorebook_imports(tmp_path: Path) -> None:
    card_png = tmp_path / "Seraphina.png"
    card_png.write_bytes(png_with_chunks(chara=V2_SILLYTAVERN))
    character = import_card(card_png, tmp_path / "chars")
    assert character.id == "seraphina"
    card = character.card
    assert card.name == "Seraphina" and card.creator == "someone"
    book = card.character_book
    assert book is not None and [e.keys for e in book.entries] == [["glade", "forest"], ["Shadowfang"]]
    assert book.entries[1].secondary_keys == ["wolf"]
    assert book.entries[1].extensions["selectiveLogic"] == 3
    # The image itself becomes the avatar, unchanged apart from nothing at all.
    assert character.avatar_path is not None and character.avatar_path.read_bytes() == card_png.read_bytes()


def test_v2_round_trip_keeps_every_field_and_unknown_extension(tmp_path: Path) -> None:
    source = tmp_path / "card.json"
    source.write_text(json.dumps(V2_SILLYTAVERN), encoding="utf-8")
    character = import_card(source, tmp_path / "chars", "sera")
    # Through card.yaml on disk and back.
    reloaded = Character.load(character.folder)
    out = export_card(reloaded, "json", tmp_path / "out.json", version="v2")
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert exported["data"] == V2_SILLYTAVERN["data"]
    assert exported["spec"] == "chara_card_v2" and exported["name"] == "Seraphina"


def test_v3_round_trip_through_png_keeps_v3_fields(tmp_path: Path) -> None:
    card = v3_card()
    source = tmp_path / "lumi.json"
    source.write_text(json.dumps(card), encoding="utf-8")
    character = import_card(source, tmp_path / "chars")
    png = export_card(character, "png", tmp_path / "lumi.png")
    texts = read_card_texts(png.read_bytes())
    assert set(texts) == {"chara", "ccv3"}
    v3 = json.loads(base64.b64decode(texts["ccv3"]))
    v2 = json.loads(base64.b64decode(texts["chara"]))
    assert v3["spec"] == "chara_card_v3" and v3["data"] == card["data"]
    assert v2["spec"] == "chara_card_v2" and "group_only_greetings" not in v2["data"]
    again = import_card(png, tmp_path / "chars", "lumi2")
    assert again.card.to_plain() == character.card.to_plain()


def test_png_prefers_ccv3_over_chara(tmp_path: Path) -> None:
    path = tmp_path / "both.png"
    path.write_bytes(png_with_chunks(chara=V2_SILLYTAVERN, ccv3=v3_card("Newer")))
    assert import_card(path, tmp_path / "c").card.name == "Newer"


def test_png_with_v3_card_in_chara_chunk(tmp_path: Path) -> None:
    path = tmp_path / "v3chara.png"
    path.write_bytes(png_with_chunks(chara=v3_card("InChara")))
    character = import_card(path, tmp_path / "c")
    assert character.card.name == "InChara" and character.card.nickname == "Lu"


def test_png_without_card_says_so(tmp_path: Path) -> None:
    path = tmp_path / "plain.png"
    path.write_bytes(placeholder_png())
    with pytest.raises(InputFileError, match=r"plain\.png.*no character card"):
        import_card(path, tmp_path / "c")


def test_export_png_replaces_old_card_chunks() -> None:
    image = png_with_chunks(chara=V2_SILLYTAVERN)
    card = card_from_json(v3_card("Fresh"))
    out = write_png_card(image, chara=card_to_json(card, "v2"), ccv3=card_to_json(card, "v3"))
    texts = read_card_texts(out)
    assert json.loads(base64.b64decode(texts["chara"]))["data"]["name"] == "Fresh"
    assert out.count(b"tEXtchara") == 1


def test_v1_and_pygmalion_cards(tmp_path: Path) -> None:
    card = card_from_json(V1_TAVERN)
    assert card.name == "Aqua" and card.first_mes == "I'm Aqua!"
    assert card_to_json(card, "v1") == V1_TAVERN  # unknown V1 keys survive too
    pyg = card_from_json(PYGMALION_V1)
    assert (pyg.name, pyg.description, pyg.scenario, pyg.first_mes) == (
        "Kurisu",
        "A neuroscientist.",
        "A lab.",
        "Hello.",
    )
    v2 = card_to_json(card, "v2")
    assert v2["spec"] == "chara_card_v2" and v2["data"]["name"] == "Aqua"


def test_charx_round_trip_with_assets(tmp_path: Path) -> None:
    card = v3_card(
        assets=[
            {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"},
            {"type": "emotion", "uri": "embeded://assets/emotion/images/joy.png", "name": "joy", "ext": "png"},
        ]
    )
    icon, joy = placeholder_png(8, (1, 2, 3)), placeholder_png(8, (9, 9, 9))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("card.json", json.dumps(card))
        archive.writestr("assets/icon/images/main.png", icon)
        archive.writestr("assets/emotion/images/joy.png", joy)
    source = tmp_path / "lumi.charx"
    source.write_bytes(buffer.getvalue())
    character = import_card(source, tmp_path / "c")
    assert character.avatar_path.read_bytes() == icon
    assert (character.folder / "assets/emotion/images/joy.png").read_bytes() == joy
    out = export_card(character, "charx", tmp_path / "out.charx")
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("card.json"))["data"] == card["data"]
        assert archive.read("assets/emotion/images/joy.png") == joy


def test_charx_refuses_paths_that_escape(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("card.json", json.dumps(v3_card()))
        archive.writestr("../../evil.txt", "x")
    source = tmp_path / "evil.charx"
    source.write_bytes(buffer.getvalue())
    with pytest.raises(InputFileError, match="escapes"):
        import_card(source, tmp_path / "c")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "c").exists()


def test_failed_import_leaves_existing_folder_untouched(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(v3_card("Keep")), encoding="utf-8")
    character = import_card(good, tmp_path / "c", "keep")
    before = (character.folder / "card.yaml").read_bytes()
    broken = tmp_path / "broken.json"
    broken.write_text('{"spec": "chara_card_v3", "data": {"name": "X", "tags": "not-a-list"', encoding="utf-8")
    with pytest.raises(InputFileError, match=r"broken\.json: invalid JSON at line 1"):
        import_card(broken, tmp_path / "c", "keep", replace=True)
    wrong_field = tmp_path / "wrong.json"
    wrong_field.write_text(json.dumps(v3_card("X", tags="nope")), encoding="utf-8")
    with pytest.raises(InputFileError, match=r"wrong\.json: field 'data\.tags'"):
        import_card(wrong_field, tmp_path / "c", "keep", replace=True)
    with pytest.raises(CompanionError, match="already exists"):
        import_card(good, tmp_path / "c", "keep")
    assert (character.folder / "card.yaml").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["keep"]


def test_malformed_card_yaml_names_file_and_field(tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "card.yaml").write_text("name: Bad\nalternate_greetings: 5\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"bad/card\.yaml: field 'alternate_greetings'"):
        load_card_yaml(folder / "card.yaml")
    (folder / "card.yaml").write_text("name: Bad\nextensions:\n  companion:\n    voice: {speed: fast}\n")
    with pytest.raises(InputFileError, match=r"field 'extensions\.companion\.voice\.speed'"):
        Character.load(folder).settings  # noqa: B018
    (folder / "card.yaml").write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(InputFileError, match=r"card\.yaml: invalid YAML at line"):
        load_card_yaml(folder / "card.yaml")


def test_card_yaml_is_readable_block_text(tmp_path: Path) -> None:
    source = tmp_path / "card.json"
    source.write_text(json.dumps(V2_SILLYTAVERN), encoding="utf-8")
    character = import_card(source, tmp_path / "c")
    text = (character.folder / "card.yaml").read_text(encoding="utf-8")
    assert "mes_example: |" in text
    assert yaml.safe_load(text)["extensions"]["some_tool"] == {"nested": {"keep": [1, 2, 3]}}


def test_macros_and_examples() -> None:
    assert substitute("{{char}} meets {{User}}; <BOT> and <USER>", char="Mochi", user="Li") == (
        "Mochi meets Li; Mochi and Li"
    )
    assert apply_original("{{original}}\nBe brief.", "Base.") == "Base.\nBe brief."
    assert apply_original("", "Base.") == "Base."
    assert apply_original("Only this.", "Base.") == "Only this."
    blocks = parse_examples(V2_SILLYTAVERN["data"]["mes_example"])
    assert [[(m.role, m.content) for m in b] for b in blocks] == [
        [("user", "Who are you?"), ("assistant", "I am {{char}}.")],
        [("user", "Hi"), ("assistant", "Hello!")],
    ]
