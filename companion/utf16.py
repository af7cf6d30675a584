"""Telling UTF-16 text without a byte-order mark from its bytes (corpus and chat-log readers share it)."""

from __future__ import annotations


def utf16_from_nuls(sample: bytes) -> str | None:
    """The byte order of UTF-16 text without a BOM: utf-16-le when nearly every odd byte of `sample`
    is NUL, utf-16-be when nearly every even one is (as in ASCII-heavy text); None for anything else,
    and for fewer than 4 bytes."""
    if len(sample) < 4:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nuls > half * 0.3 and even_nuls < half * 0.05:
        return "utf-16-le"
    if even_nuls > half * 0.3 and odd_nuls < half * 0.05:
        return "utf-16-be"
    return None
