"""Exact and near-duplicate removal.

Exact: the same text once punctuation, spacing and case are set aside. Near: MinHash over
character 3-grams (64 hash functions) with locality-sensitive hashing (8 bands of 8 rows) to
find candidate pairs, each then checked by its true Jaccard similarity against the threshold,
so the LSH only decides what gets compared, never what gets dropped. First seen wins, so the
result depends only on the input order.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Sequence

import numpy as np

NUM_PERM = 64
BANDS = 8
ROWS = NUM_PERM // BANDS
SHINGLE = 3
_rng = np.random.default_rng(20240601)
_A = _rng.integers(1, 1 << 63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)  # odd multipliers
_B = _rng.integers(0, 1 << 63, size=NUM_PERM, dtype=np.uint64)
_SHIFT = np.uint64(32)
_STRIP = re.compile(r"[\s\W_]+")


def normalize(text: str) -> str:
    return _STRIP.sub("", text.lower())


def exact_key(text: str) -> str:
    return hashlib.blake2b(normalize(text).encode(), digest_size=16).hexdigest()


def shingles(text: str) -> set[int]:
    """Character 3-grams as exact 63-bit integers (three 21-bit code points): no hashing, so
    the same text gives the same set on every machine."""
    bare = normalize(text) or text
    points = np.frombuffer(bare.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(points) < SHINGLE:
        return {int(zlib.crc32(bare.encode()))}
    grams = (points[:-2] << np.uint64(42)) | (points[1:-1] << np.uint64(21)) | points[2:]
    return set(grams.tolist())


def minhash(values: set[int]) -> np.ndarray:
    """Multiply-shift hashing (wrapping 64-bit arithmetic), one row per permutation."""
    x = np.fromiter(values, dtype=np.uint64, count=len(values))
    hashed = (np.multiply.outer(x, _A) + _B) >> _SHIFT
    return hashed.min(axis=0)


def jaccard(a: set[int], b: set[int]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Deduplicator:
    """Feed texts in order; `check` says 'exact', 'near' or None (new, and now remembered)."""

    def __init__(self, threshold: float = 0.85) -> None:
        self.threshold = threshold
        self.exact: set[str] = set()
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(BANDS)]
        self.kept: list[set[int]] = []

    def check(self, text: str) -> str | None:
        key = exact_key(text)
        if key in self.exact:
            return "exact"
        grams = shingles(text)
        signature = minhash(grams)
        bands = [signature[i * ROWS : (i + 1) * ROWS].tobytes() for i in range(BANDS)]
        if self.threshold < 1.0:
            seen: set[int] = set()
            for band, bucket in zip(bands, self.buckets, strict=True):
                for index in bucket.get(band, ()):
                    if index not in seen:
                        seen.add(index)
                        if jaccard(grams, self.kept[index]) >= self.threshold:
                            return "near"
        self.exact.add(key)
        index = len(self.kept)
        self.kept.append(grams)
        for band, bucket in zip(bands, self.buckets, strict=True):
            bucket.setdefault(band, []).append(index)
        return None


def deduplicate(texts: Sequence[str], threshold: float = 0.85) -> list[str | None]:
    dedupe = Deduplicator(threshold)
    return [dedupe.check(text) for text in texts]
