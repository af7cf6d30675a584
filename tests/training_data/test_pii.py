"""PII scrubbing: the labelled set's goal, typed placeholders, look-alikes left alone."""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest

from training.pii import find_pii, id_checksum_ok, luhn_ok, scrub

ROOT = Path(__file__).resolve().parents[2]


def load_bench():
    spec = importlib.util.spec_from_file_location("data_pii", ROOT / "bench" / "data_pii.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_labelled_set_meets_the_goal() -> None:
    result = load_bench().evaluate()
    assert result["cases"] >= 150 and result["negatives"] >= 60
    assert result["recall"] >= 0.98, result["misses"]
    assert result["precision"] >= 0.95, result["false_alarms"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我手机13812345678", "我手机<PHONE>"),
        ("mail me: a.b@example.com", "mail me: <EMAIL>"),
        ("身份证110105199003071239", "身份证<ID_CARD>"),
        ("卡号6222025260181590832", "卡号<BANK_CARD>"),
        ("加我QQ：123456789", "加我QQ：<QQ>"),
        ("微信号 zhang-san88 通过一下", "微信号 <WECHAT_ID> 通过一下"),
        ("寄到北京市朝阳区建国路88号", "寄到<ADDRESS>"),
        ("https://x.example.com/a?token=abcdef123456", "<URL_TOKEN>"),
    ],
)
def test_placeholders(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "订单号：202403151234567890",
        "2024-03-15 14:30 见",
        "¥1299，打完折899元",
        "一共3瓶，每瓶500ml",
        "It costs $1,299.99 plus tax.",
        "Version 3.11.4",
        "[旺柴]哈哈😂 (≧▽≦)",
        "https://www.example.com/about",
    ],
)
def test_not_pii(text: str) -> None:
    assert find_pii(text) == []


def test_checksums() -> None:
    assert id_checksum_ok("110105199003071239") and not id_checksum_ok("110105199003071238")
    assert luhn_ok("4111390996030824") and not luhn_ok("4111390996030825")


def test_counts_and_public_facts() -> None:
    counts: Counter[str] = Counter()
    text = "店在海棠街27号，我家在北京市朝阳区建国路88号"
    assert scrub(text, counts, public="月兔烘焙坊在青澜镇海棠街27号") == "店在海棠街27号，我家在<ADDRESS>"
    assert counts == Counter({"ADDRESS": 1, "public:ADDRESS": 1})


def test_no_false_alarms_on_literature(testdata: Path) -> None:
    clean = load_bench().scan_clean_text(testdata)
    assert clean["lines"] > 5000
    assert len(clean["false_alarms"]) <= 2, clean["false_alarms"]
