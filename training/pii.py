"""PII scrubbing into typed placeholders, before anything is written.

Found and replaced: mobile and landline numbers (China and international) -> `<PHONE>`,
emails -> `<EMAIL>`, Chinese resident ID numbers (checksum and birth date checked) ->
`<ID_CARD>`, bank card numbers (Luhn and a card-network prefix) -> `<BANK_CARD>`, QQ numbers
and WeChat ids after their keyword (`QQ：`, `微信号`, `vx`, `wxid_...`) -> `<QQ>` / `<WECHAT_ID>`
(the keyword stays), street addresses (Chinese 省/市/区 + 路/街/巷 + 号, English number + street
type) -> `<ADDRESS>`, and URLs that carry secrets (token/key/sig/pwd/session parameters,
credentials, long share codes) -> `<URL_TOKEN>`. MemoTrace's masked `[phone …]`, `[email …]`,
`[id_card …]` become the same placeholders.

Not PII and left alone: dates, times, prices, quantities, versions, ISBNs, timestamps, and
numbers introduced as order/tracking/invoice/serial numbers; an ID number with a bad
checksum counts only when 身份证/ID card is written just before it. Plain URLs protect their
insides (an id in a product link is not a phone). `bench/data_pii.py` measures recall and
precision on `tests/training_data/pii_cases.jsonl`.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import date
from urllib.parse import parse_qsl, urlsplit

PLACEHOLDERS = ("PHONE", "EMAIL", "ID_CARD", "BANK_CARD", "QQ", "WECHAT_ID", "ADDRESS", "URL_TOKEN")
_B = r"(?<![\dA-Za-z])"  # digit-run boundaries
_E = r"(?![\dA-Za-z])"

QUICK = re.compile(r"[\d@]|://|微信|威信|薇信|v信|wx|vx|wechat|weixin|qq|扣扣|q号|企鹅", re.I)

MASKED = re.compile(r"\[(phone|email|id_card|idcard|bank_card)\s[^\]]{1,40}\]", re.I)
MASKED_TYPES = {"phone": "PHONE", "email": "EMAIL", "id_card": "ID_CARD", "idcard": "ID_CARD", "bank_card": "BANK_CARD"}

URL = re.compile(r"(?:https?|ftp)://[^\s<>\"'，。！？、；）)\]】」]+", re.I)
SECRET_KEYS = re.compile(
    r"^(?:.*token.*|.*secret.*|.*passw.*|pwd|pass|passcode|key|api[-_]?key|apikey|access[-_]?key|sig|signature|"
    r"x-amz-signature|x-amz-credential|x-goog-signature|auth|authorization|credential|session|session[-_]?id|sid|"
    r"ticket|otp|jwt|code|verify|verification|提取码)$",
    re.I,
)
SHARE_CODE = re.compile(r"(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Z])(?=[A-Za-z0-9_-]*[a-z])[A-Za-z0-9_-]{20,}")

EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
)

ID_CARD = re.compile(_B + r"([1-8]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx])" + _E)
ID_CARD_OLD = re.compile(_B + r"([1-8]\d{5}\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3})" + _E)
ID_CONTEXT = re.compile(r"(身份证|证件|身份號|id\s*card|identity|national id)[^，。,.!?！？]{0,8}$", re.I)
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
ID_CHECK = "10X98765432"

CARD = re.compile(_B + r"(\d{4}(?:[ -]\d{4}){2,3}(?:[ -]\d{1,3})?|\d{4}[ -]\d{6}[ -]\d{5}|\d{13,19})" + _E)
CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2(?:2[2-9]|[3-6]\d|7[01]|720)|3[47]|3[0689]|35|6(?:011|2|4[4-9]|5)|9[45]\d\d)")
CARD_CONTEXT = re.compile(r"(卡号|银行卡|信用卡|储蓄卡|借记卡|账号|帐号|收款|card|account)", re.I)

MOBILE_CN = re.compile(_B + r"((?:(?:\+|00)86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2})" + _E)
LANDLINE_CN = re.compile(
    _B + r"((?:\((?:010|02\d|0[3-9]\d{2})\)|(?:010|02\d|0[3-9]\d{2})[ -]?)[2-9]\d{2,3}[ -]?\d{4})" + _E
)
NANP = re.compile(r"(?<![\dA-Za-z+])((?:\+?1[ .-]?)?(?:\([2-9]\d{2}\)[ .-]?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4})" + _E)
TOLL_FREE = re.compile(r"^(?:400|8(?:00|33|44|55|66|77|88))")
INTL = re.compile(r"(?<![\dA-Za-z])(\+[1-9]\d{0,2}(?:[ -]?\(?\d{1,4}\)?){2,5})" + _E)

QQ = re.compile(r"(?:qq|扣扣|企鹅号|q号)(?:号码|号)?\s*(?:is|是|为|:|：)?\s*([1-9]\d{4,10})(?!\d)", re.I)
WECHAT = re.compile(
    r"(?:微信|weixin|wechat|vx|wx|v信|威信|薇信)(?:号码|号|id)?[\s:：是为吧呢一下]*(?:is\s+)?([A-Za-z][-_A-Za-z0-9]{5,19})(?![-\w])",
    re.I,
)
WXID = re.compile(r"(?<![A-Za-z0-9])(wxid_[a-z0-9]{6,24})(?![A-Za-z0-9])", re.I)

_CN = r"\u4e00-\u9fa5"
ADDRESS_CN = re.compile(
    rf"(?:[{_CN}]{{2,6}}?(?:省|自治区))?(?:[{_CN}]{{2,6}}?(?:市|自治州|地区|盟))?(?:[{_CN}]{{1,6}}?(?:区|县|旗))?"
    rf"(?:[{_CN}]{{1,8}}?(?:街道|镇|乡))?"
    rf"[{_CN}A-Za-z0-9]{{1,7}}?(?:路|街|大道|大街|道|巷|弄|胡同|里)(?:[一二三四五六七八九十\d]+段)?[东西南北]?"
    rf"\d+(?:-\d+)?(?:号|弄)(?:院)?"
    rf"(?:(?:[{_CN}A-Za-z]{{0,10}}?(?:广场|大厦|中心|花园|小区|公寓|大楼|城|苑|府|园|大学))?"
    rf"(?:[A-Za-z\d一二三四五六七八九十]+(?:号楼|栋|幢|座|单元|层|楼|室|舍|号))*\d{{0,4}})"
)
ADDRESS_LEAD = re.compile(r"^(?:寄到|送到|发到|搬到|住在|家在|老家是|地址是|我家在|我住|来|到|在|是|于)+")
STREET_ONLY = re.compile(r"[^省市区县镇乡]*[在到于是往住]")
STREET_TYPES = (
    r"Street|St\.?|Avenue|Ave\.?|Road|Rd\.?|Boulevard|Blvd\.?|Lane|Ln\.?|Drive|Dr\.?|Court|Ct\.?|Way|Place|Pl\.?"
    r"|Terrace|Square|Sq\.?|Parkway|Pkwy\.?|Highway|Hwy\.?|Circle|Cir\.?"
)
ADDRESS_EN = re.compile(
    rf"\b\d{{1,6}}[A-Z]?\s+(?:[A-Z][a-z]+\s+){{1,3}}(?:{STREET_TYPES})(?![A-Za-z])"
    r"(?:\s+(?:NW|NE|SW|SE|N|S|E|W)\b)?"
    r"(?:,?\s+(?:Apt|Apartment|Suite|Ste|Unit|#)\.?\s*\w+)?"
    r"(?:,\s+[A-Z][a-z]+(?:\s[A-Z][a-z]+)*)?"
    r"(?:,\s+[A-Z]{2}\s+\d{5}(?:-\d{4})?)?"
)

NOT_PII_CONTEXT = re.compile(
    r"(订单|单号|运单|编号|流水|发票|合同|学号|工号|工单|批次|序列号|货号|条码|order|tracking|invoice|serial|ref|reference|#)"
    r"(?:\s*(?:no\.?|number|num\.?|id)\b)?[号码：:\s#是为.]{0,4}$",
    re.I,
)
PHONE_CONTEXT = re.compile(r"(电话|手机|号码|座机|tel|phone|call|mobile|cell)", re.I)


@dataclass(frozen=True)
class Finding:
    start: int
    end: int
    type: str
    text: str


def id_checksum_ok(number: str) -> bool:
    total = sum(int(d) * w for d, w in zip(number[:17], ID_WEIGHTS, strict=True))
    return ID_CHECK[total % 11] == number[17].upper()


def _birth_date_ok(number: str) -> bool:
    try:
        born = date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    return date(1900, 1, 1) <= born <= date.today()


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _before(text: str, start: int, size: int = 14) -> str:
    return text[max(0, start - size) : start]


def _not_pii_context(text: str, start: int) -> bool:
    """An order/tracking/serial number: its label stands right before it, and no phone word nearer."""
    before = _before(text, start)
    label = NOT_PII_CONTEXT.search(before)
    if not label:
        return False
    phones = [m.start() for m in PHONE_CONTEXT.finditer(before)]
    return not phones or phones[-1] < label.start()


def _ordinal(text: str, start: int, end: int) -> bool:
    return text[start - 1 : start] == "第" and text[end : end + 1] in ("位", "名", "个", "次", "期")


def _sensitive_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if parts.username or parts.password:
        return True
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_KEYS.match(key.strip()) and len(value) >= 4:
            return True
    return any(SHARE_CODE.fullmatch(segment) for segment in parts.path.split("/"))


def find_pii(text: str) -> list[Finding]:
    """Every PII span in `text`, non-overlapping, in order."""
    if not text or not QUICK.search(text):
        return []
    candidates: list[tuple[int, Finding]] = []  # (priority, finding)

    def add(priority: int, start: int, end: int, kind: str) -> None:
        candidates.append((priority, Finding(start, end, kind, text[start:end])))

    for match in MASKED.finditer(text):
        add(100, match.start(), match.end(), MASKED_TYPES[match.group(1).lower()])
    for match in URL.finditer(text):
        url = match.group(0).rstrip(".,;:!?")
        add(
            95 if _sensitive_url(url) else 94,
            match.start(),
            match.start() + len(url),
            "URL_TOKEN" if _sensitive_url(url) else "",
        )
    for match in EMAIL.finditer(text):
        add(80, match.start(), match.end(), "EMAIL")
    for match in ID_CARD.finditer(text):
        number = match.group(1)
        valid = id_checksum_ok(number) and _birth_date_ok(number)
        if (valid and not _not_pii_context(text, match.start(1))) or ID_CONTEXT.search(_before(text, match.start(1))):
            add(70, match.start(1), match.end(1), "ID_CARD")
    for match in ID_CARD_OLD.finditer(text):
        if ID_CONTEXT.search(_before(text, match.start(1))):
            add(70, match.start(1), match.end(1), "ID_CARD")
    for match in CARD.finditer(text):
        digits = re.sub(r"[ -]", "", match.group(1))
        if not 13 <= len(digits) <= 19 or not luhn_ok(digits) or _not_pii_context(text, match.start(1)):
            continue
        if CARD_PREFIX.match(digits) or CARD_CONTEXT.search(_before(text, match.start(1), 12)):
            add(60, match.start(1), match.end(1), "BANK_CARD")
    for pattern in (MOBILE_CN, LANDLINE_CN, NANP, INTL):
        for match in pattern.finditer(text):
            start, end = match.start(1), match.end(1)
            digits = re.sub(r"\D", "", match.group(1))
            if pattern is INTL and not 8 <= len(digits) <= 15:
                continue
            if pattern is NANP and TOLL_FREE.match(digits):
                continue  # 400/800 service lines belong to companies, not people
            if _not_pii_context(text, start) or _ordinal(text, start, end):
                continue
            add(50, start, end, "PHONE")
    for match in QQ.finditer(text):
        add(45, match.start(1), match.end(1), "QQ")
    for pattern in (WECHAT, WXID):
        for match in pattern.finditer(text):
            value = match.group(1)
            if pattern is WECHAT and value.lower().startswith(("http", "www")):
                continue
            add(44, match.start(1), match.end(1), "WECHAT_ID")
    for match in ADDRESS_CN.finditer(text):
        lead = ADDRESS_LEAD.match(match.group(0))
        start = match.start() + (lead.end() if lead else 0)
        street = STREET_ONLY.match(text, start, match.end())
        if street:  # no 省/市/区 before the street: the name starts after the last 在/到/住...
            start = street.end()
        if match.end() - start >= 5:
            add(30, start, match.end(), "ADDRESS")
    for match in ADDRESS_EN.finditer(text):
        add(30, match.start(), match.end(), "ADDRESS")

    chosen: list[Finding] = []
    for _priority, finding in sorted(candidates, key=lambda c: (-c[0], -(c[1].end - c[1].start), c[1].start)):
        if all(finding.end <= other.start or finding.start >= other.end for other in chosen):
            chosen.append(finding)
    return sorted((f for f in chosen if f.type), key=lambda f: f.start)


def scrub(text: str, counts: Counter[str] | None = None, public: str = "") -> str:
    """`text` with each PII span replaced by its placeholder (`<PHONE>`, ...).

    `public` is text already published with the character (card, lorebook, lore): a span
    found in it is the character's own fictional fact (her bakery's address), not someone's
    private data, and stays (counted as `public:<TYPE>`)."""
    findings = find_pii(text)
    if public and findings:
        kept = [f for f in findings if f.text in public]
        if counts is not None:
            for finding in kept:
                counts[f"public:{finding.type}"] += 1
        findings = [f for f in findings if f.text not in public]
    if not findings:
        return text
    parts: list[str] = []
    cursor = 0
    for finding in findings:
        parts.append(text[cursor : finding.start])
        parts.append(f"<{finding.type}>")
        cursor = finding.end
        if counts is not None:
            counts[finding.type] += 1
    parts.append(text[cursor:])
    return "".join(parts)
