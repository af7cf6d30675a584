"""Writing systems by Unicode range, for regular expressions: `f"[{HAN}{KANA}]"`.

A Han, kana or hangul character is a whole syllable (and usually a word or most of one), so code
that counts words, guesses a language or sizes speech treats each one as a unit.
"""

from __future__ import annotations

import re

HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
"""CJK ideographs: extension A, the unified block and the compatibility block."""
KANA = "\u3040-\u30ff"
HANGUL = "\uac00-\ud7af"
CJK = HAN + KANA + HANGUL
FULLWIDTH = "\uff00-\uffef"
"""Full-width Latin, digits and punctuation (and half-width katakana)."""

CJK_CHAR = re.compile(f"[{CJK}]")
HAN_CHAR = re.compile(f"[{HAN}]")
