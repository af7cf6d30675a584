"""Speech recognition accuracy: word error rate (English and other spaced languages) and character
error rate (Chinese, Japanese), after the usual normalisation (case, punctuation, script)."""

from __future__ import annotations

import re
from collections.abc import Sequence

_NUMBERS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty"
).split()
_CONTRACTIONS = {
    "n't": " not",
    "'re": " are",
    "'m": " am",
    "'ll": " will",
    "'ve": " have",
    "'d": " would",
    "let's": "let us",
    "it's": "it is",
    "that's": "that is",
    "what's": "what is",
    "there's": "there is",
    "he's": "he is",
    "she's": "she is",
    "won't": "will not",
    "can't": "can not",
}


def normalize_words(text: str) -> list[str]:
    """Lower case, no punctuation, contractions expanded, small numbers as digits (as Whisper's
    English normaliser does, in brief), so "you're ... 3" and "you are ... three" agree."""
    text = text.lower().replace("’", "'")
    for short in ("won't", "can't", "let's", "it's", "that's", "what's", "there's", "he's", "she's"):
        text = text.replace(short, _CONTRACTIONS[short])
    for suffix in ("n't", "'re", "'m", "'ll", "'ve", "'d"):
        text = text.replace(suffix, _CONTRACTIONS[suffix])
    text = re.sub(r"[^\w' ]+", " ", text)
    words = [w.strip("'") for w in text.split() if w.strip("'")]
    return [str(_NUMBERS.index(w)) if w in _NUMBERS else w for w in words]


def normalize_chars(text: str) -> list[str]:
    try:
        import zhconv

        text = zhconv.convert(text, "zh-cn")
    except ImportError:
        pass
    return [c for c in text.lower() if c.isalnum()]


def edit_distance(a: Sequence, b: Sequence) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def wer(reference: str, hypothesis: str) -> float:
    ref = normalize_words(reference)
    return edit_distance(ref, normalize_words(hypothesis)) / max(1, len(ref))


def cer(reference: str, hypothesis: str) -> float:
    ref = normalize_chars(reference)
    return edit_distance(ref, normalize_chars(hypothesis)) / max(1, len(ref))
