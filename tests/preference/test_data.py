"""Reading preference pairs: LLaMA-Factory's ranking format, the court's export, TRL and Alpaca."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from companion.errors import InputFileError
from tests.court.conftest import LINES
from training.court.export import export_pairs
from training.court.settings import CourtSettings
from training.court.store import Court
from training.preference.data import find_pairs, read_pairs, split_pairs


def test_llamafactory_dpo_demo(testdata: Path):
    pairs = read_pairs(testdata / "sft_formats" / "llamafactory" / "dpo_zh_demo.json")
    assert len(pairs) == 300
    assert sum(p.system is not None for p in pairs) == 64  # system messages are kept apart from the prompt
    assert all(len(p.prompt) == 1 and p.prompt[-1].role == "user" for p in pairs)
    assert all(p.chosen != p.rejected for p in pairs)
    train, held = split_pairs(pairs, 0.1, 42)
    assert len(held) == 30 and len(train) == 270
    assert split_pairs(pairs, 0.1, 42)[1] == held  # stable


def test_court_votes_become_pairs(tmp_path: Path):
    court = Court(tmp_path / "court.db", CourtSettings(min_votes=2))
    author = court.add_user("author")[0]
    voters = [court.add_user(f"v{i}")[0] for i in range(3)]
    good = court.submit(author, "mochi", LINES[0][0], LINES[0][1])
    bad = court.submit(author, "mochi", LINES[0][0], "我最喜欢吃的是你的钱包，快把钱交出来吧哈哈哈。")
    other = court.submit(author, "mochi", *LINES[1])  # another question: no partner
    for v in voters[:2]:
        court.vote(v, court.ballot(v, good.id).token, "approve")
        court.vote(v, court.ballot(v, bad.id).token, "reject")
        court.vote(v, court.ballot(v, other.id).token, "approve")
    out = tmp_path / "mochi" / "preference" / "court.jsonl"
    assert export_pairs(court, "mochi", out) == 1
    info = json.loads((out.parent / "dataset_info.json").read_text(encoding="utf-8"))
    assert info["mochi_dpo"]["ranking"] is True and info["mochi_dpo"]["file_name"] == "court.jsonl"
    (pair,) = read_pairs(out)
    assert (pair.prompt[0].content, pair.chosen, pair.rejected) == (LINES[0][0], LINES[0][1], bad.answer)
    assert find_pairs(tmp_path / "mochi") == [out]  # dataset_info.json is not a pairs file


def test_trl_and_alpaca_records(tmp_path: Path):
    path = tmp_path / "pairs.jsonl"
    records = [
        {"prompt": "Hi?", "chosen": "Beep, hello!", "rejected": "..."},
        {"prompt": [{"role": "system", "content": "Be Tiny."}, {"role": "user", "content": "Tea?"}],
         "chosen": [{"role": "assistant", "content": "Yes please!"}],
         "rejected": [{"role": "assistant", "content": "No."}]},
        {"instruction": "Say hi", "input": "", "history": [["Hello", "Beep"]], "chosen": "Hi!", "rejected": "Go away."},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    a, b, c = read_pairs(path)
    assert a.prompt[0].content == "Hi?" and a.system is None
    assert b.system == "Be Tiny." and b.chosen == "Yes please!"
    assert [m.role for m in c.prompt] == ["user", "assistant", "user"] and c.rejected == "Go away."


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"conversations": [{"from": "human", "value": "q"}], "chosen": "a"}, "needs 'chosen' and 'rejected'"),
        ({"chosen": "a", "rejected": "b"}, "no prompt"),
        ({"prompt": "q", "chosen": "same", "rejected": "same"}, "the same text"),
        ({"prompt": "q", "chosen": "", "rejected": "b"}, "'chosen' is empty"),
        ({"conversations": [{"from": "gpt", "value": "x"}], "chosen": "a", "rejected": "b"}, "end with the user"),
        ({"conversations": [{"from": "alien", "value": "x"}], "chosen": "a", "rejected": "b"}, "unknown role"),
        ([1, 2], "is not an object"),
    ],
)
def test_bad_records_name_the_record(tmp_path: Path, record, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "ok?", "chosen": "y", "rejected": "n"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(InputFileError, match=problem) as refused:
        read_pairs(path)
    assert "record 2" in str(refused.value)


def test_no_pairs_says_how_to_make_them(tmp_path: Path):
    with pytest.raises(InputFileError, match="companion court export"):
        find_pairs(tmp_path)
