"""Lexical retrieval: BM25 over words, with jieba segmenting Chinese.

Chinese has no spaces, so whitespace tokenisation turns a whole sentence into one "word"
and BM25 finds nothing. jieba's search mode yields words and their sub-words
(为什么 -> 什么, 为什么), so a query and a passage that segment a name differently still
share terms. Latin text comes out as lower-cased, stemmed words; punctuation and stop words
are dropped. English stop words are NLTK's list (shipped in bm25s): it includes the question
words and pronouns a user's turn is full of ("who was your wife?") and that lore written in the
third person never shares, so they only added noise to the ranking.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from companion import atomic

TOKENIZER_VERSION = 3  # part of every BM25 cache's fingerprint: a change here rebuilds them
_jieba = None
_stemmer = None
_jieba_lock = threading.Lock()
_LATIN_WORD = re.compile(r"^[a-z][a-z'-]*$")
_CHINESE_STOPWORDS = frozenset("的 了 着 呢 吗 吧 啊 呀 嘛 哦 哈 么 之 而 与 及 和".split())


def _tokenizer():
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                tokenizer = jieba.Tokenizer()
                tokenizer.initialize()
                _jieba = tokenizer
    return _jieba


def _stem(tokens: list[str]) -> list[str]:
    """English words to their Snowball stems (retreated -> retreat), so BM25 matches word forms."""
    global _stemmer
    if _stemmer is None:
        import Stemmer

        _stemmer = Stemmer.Stemmer("english")
    return [_stemmer.stemWord(t) if _LATIN_WORD.match(t) else t for t in tokens]


@lru_cache(maxsize=1)
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return _CHINESE_STOPWORDS | frozenset(STOPWORDS_EN_PLUS)


def _is_term(token: str) -> bool:
    if not token.strip() or token in _stopwords():
        return False
    return any(unicodedata.category(ch)[0] in "LN" for ch in token)


def tokenize(text: str) -> list[str]:
    """BM25 terms of `text`: NFKC-normalised, lower-cased, segmented by jieba (search mode: words
    and their sub-words), English words stemmed, stop words and punctuation dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _stem([t for t in _tokenizer().cut_for_search(text) if _is_term(t)])


@lru_cache(maxsize=256)
def query_terms(text: str) -> tuple[str, ...]:
    return tuple(tokenize(text))


class LexicalIndex:
    """BM25 (Lucene variant, bm25s) over chunk ids; saved next to the vector index."""

    FORMAT = 1 + TOKENIZER_VERSION * 100

    def __init__(self, ids: Sequence[str], retriever) -> None:
        self.ids = list(ids)
        self._retriever = retriever
        self._vocab: dict[str, int] = retriever.vocab_dict if retriever is not None else {}

    @classmethod
    def build(cls, ids: Sequence[str], texts: Iterable[str]) -> LexicalIndex:
        import bm25s

        corpus = [tokenize(t) for t in texts]
        if not ids:
            return cls([], None)
        retriever = bm25s.BM25(method="lucene")
        retriever.index(corpus, show_progress=False)
        return cls(ids, retriever)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, terms: Sequence[str], k: int) -> list[tuple[str, float]]:
        """The best `k` chunk ids for these terms, with BM25 scores (only ids that share a term)."""
        if self._retriever is None or not terms:
            return []
        known = [t for t in terms if t in self._vocab]
        if not known:
            return []
        scores = self._retriever.get_scores(known)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]

    def save(self, folder: Path, fingerprint: str) -> None:
        with atomic.staged_dir(folder, replace=True) as staging:
            if self._retriever is not None:
                self._retriever.save(str(staging / "bm25"), show_progress=False)
            meta = {"format": self.FORMAT, "fingerprint": fingerprint, "ids": self.ids}
            (staging / "index.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, fingerprint: str) -> LexicalIndex | None:
        """The saved index if it was built from the same chunks, else None."""
        try:
            meta = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            if meta.get("format") != cls.FORMAT or meta.get("fingerprint") != fingerprint:
                return None
            if not meta["ids"]:
                return cls([], None)
            import bm25s

            retriever = bm25s.BM25.load(str(folder / "bm25"), mmap=False, show_progress=False)
            return cls(meta["ids"], retriever)
        except Exception as error:  # a damaged cache is rebuilt from the store, never fatal
            logging.getLogger(__name__).warning("lexical index in %s unreadable (%s); rebuilding it", folder, error)
            return None
