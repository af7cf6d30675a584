"""Per-user memory: what each user tells the character, recalled in later conversations.

Every (character, user) pair has its own collection in the namespace `memory/<character>`
(its name carries a hash of the user id), so a recall for one user cannot return another
user's rows whatever the query: isolation is by construction, not by a filter someone might
forget. Forgetting a user drops the collection.

What is kept: sentences in the user's turns that say something about the user (first person:
我/I/my ...), not questions, not small talk. Recognisable facts are also kept as profile facts
that are always recalled: the user's name ("我叫小林", "call me Sam"). Everything else is
recalled when it is relevant to the new turn (dense similarity above the embedder's floor,
or shared content words).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from knowledge import lexical
from knowledge.embedders import Embedder
from knowledge.relevance import Relevance
from knowledge.store import Collection, Namespace, VectorStore

FIRST_PERSON = re.compile(r"我|俺|咱|本人|\b(?:i|i'm|i've|i'd|i'll|im|me|my|mine|myself)\b", re.IGNORECASE)
_QUESTION_END = re.compile(r"[?？吗呢嘛]\s*[。.!！~～]*\s*$")
_QUESTION_START = re.compile(
    r"^\s*(?:do|does|did|can|could|would|will|what|who|where|when|why|how|are|is|have|has)\b", re.IGNORECASE
)
_SPLIT = re.compile(r"(?<=[。！？!?；;\n])|(?<=[.])\s+")
_NAME_PATTERNS = [
    # 我叫小林 / 我的名字是小林 / (你)叫我阿伟就行: two to four characters, or a Latin name
    re.compile(
        r"(?:我叫|我的名字(?:是|叫)|我名叫|(?:^|[，,。！!\s]|你|可以|就|以后)叫我)\s*"
        r"(?![了着过他她它你我们人来去醒车干什怎做啥])([\u4e00-\u9fff]{2,4}?|[A-Za-z][A-Za-z'-]{1,20})"
        r"(?=[。，,.!！?？\s就吧啦呀哦]|$)"
    ),
    # my name is Sam / call me Sam: a capitalised name only ("call me later" is not a name)
    re.compile(
        r"(?i:\b(?:my name is|my name's|call me|i am called|i'm called))\s+([A-Z][\w'-]{1,20}(?: [A-Z][\w'-]{1,20})?)"
    ),
]
_SMALL_TALK = re.compile(
    r"^(?:我(?:也|还)?(?:好|是的|知道了|明白了|懂了)|i see|i know|i'm fine|i am fine|me too)[。.!！~]*$", re.IGNORECASE
)
MIN_CHARS = 4


@dataclass
class Memory:
    id: str
    text: str
    kind: str  # "fact" (always recalled) or "said"
    time: float
    score: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "kind": self.kind, "time": self.time}


def extract(user_text: str) -> list[tuple[str, str, str]]:
    """(id, text, kind) memories worth keeping from one user turn."""
    out: list[tuple[str, str, str]] = []
    for pattern in _NAME_PATTERNS:
        match = pattern.search(user_text)
        if match:
            name = match.group(1).strip(" -·")
            if name:
                out.append(("profile:name", f"{{{{user}}}}'s name is {name}", "fact"))
                break
    for sentence in (s.strip() for s in _SPLIT.split(user_text)):
        if len(sentence) < MIN_CHARS or not FIRST_PERSON.search(sentence):
            continue
        if _QUESTION_END.search(sentence) or _QUESTION_START.match(sentence) or _SMALL_TALK.match(sentence):
            continue
        memory_id = f"said:{hashlib.sha1(sentence.casefold().encode()).hexdigest()[:16]}"
        if all(memory_id != kept for kept, _, _ in out):  # said twice in one message: one id
            out.append((memory_id, sentence, "said"))
    return out


def user_key(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:24]


class MemoryStore:
    """Memories of one character, kept apart per user."""

    def __init__(self, character_id: str, embedder: Embedder, store: VectorStore, *, max_items: int = 2000) -> None:
        self.character_id = character_id
        self.max_items = max_items
        self.embedder = embedder
        self.namespace: Namespace = store.namespace(f"memory/{character_id}")
        self._collections: dict[str, Collection] = {}
        self._relevance: Relevance | None = None

    def relevance(self) -> Relevance:
        if self._relevance is None:
            self._relevance = Relevance(self.embedder)
        return self._relevance

    def _name(self, user_id: str) -> str:
        return f"user-{user_key(user_id)}"

    def _collection(self, user_id: str, *, create: bool) -> Collection | None:
        name = self._name(user_id)
        if name in self._collections:
            return self._collections[name]
        if create:
            meta = {"user_id": user_id, "character": self.character_id, "embedder": self.embedder.key}
            collection = self.namespace.collection(name, metadata=meta)
        else:
            collection = self.namespace.find(name)
            if collection is None:
                return None
        if collection.metadata.get("embedder") != self.embedder.key:
            collection = self._reembed(user_id, collection)
        self._collections[name] = collection
        return collection

    def _reembed(self, user_id: str, collection: Collection) -> Collection:
        """The embedder changed: the rows are kept (they are the user's data) with new vectors."""
        rows = collection.get()
        if rows:
            vectors = self.embedder.embed_documents([r.document for r in rows])
            name = self._name(user_id)
            self.namespace.delete_collection(name)
            meta = {"user_id": user_id, "character": self.character_id, "embedder": self.embedder.key}
            collection = self.namespace.collection(name, metadata=meta)
            collection.upsert([r.id for r in rows], vectors, [r.document for r in rows], [r.metadata for r in rows])
        else:
            collection.set_metadata({"embedder": self.embedder.key})
        return collection

    def remember(self, user_id: str, user_text: str, reply: str = "", *, now: float | None = None) -> list[str]:
        """Store what this turn says about the user; returns the texts kept."""
        found = extract(user_text)
        if not found:
            return []
        collection = self._collection(user_id, create=True)
        assert collection is not None
        now = time.time() if now is None else now
        texts = [text for _, text, _ in found]
        vectors = self.embedder.embed_documents(texts)
        metas = [{"kind": kind, "time": now, "reply": reply[:500] or None} for _, _, kind in found]
        collection.upsert([mid for mid, _, _ in found], vectors, texts, metas)
        if collection.count() > self.max_items:
            said = [r for r in collection.get(documents=False) if r.metadata.get("kind") != "fact"]
            said.sort(key=lambda r: float(r.metadata.get("time", 0.0)))
            collection.delete(ids=[r.id for r in said[: collection.count() - self.max_items]])
        return texts

    def recall(
        self, user_id: str, query: str, *, k: int, vector: np.ndarray | None = None, min_z: float = 2.0
    ) -> list[Memory]:
        """Profile facts, then the memories related to `query` (at most `k` of those): standing out
        by `min_z` from everyday text (see knowledge.relevance), or sharing a word with it."""
        collection = self._collection(user_id, create=False)
        if collection is None:
            return []
        count = collection.count()
        if not count:
            return []
        facts = [self._memory(r) for r in collection.get(where={"kind": "fact"})]
        if k <= 0 or count == len(facts):
            return facts
        if vector is None:
            vector = self.embedder.embed_queries([query])[0]
        baseline = self.relevance().baseline(vector)
        terms = set(lexical.query_terms(query))
        related = []
        for record in collection.query(vector, min(count, k * 4 + len(facts))):
            if record.metadata.get("kind") == "fact":
                continue
            z = Relevance.z(1.0 - (record.distance or 0.0), baseline)
            shared = terms & set(lexical.tokenize(record.document))
            if z >= min_z or (shared and z >= 0):
                memory = self._memory(record)
                memory.score = z + len(shared)
                related.append(memory)
        related.sort(key=lambda m: -m.score)
        return facts + related[:k]

    @staticmethod
    def _memory(record) -> Memory:
        meta = record.metadata
        return Memory(
            id=record.id,
            text=record.document,
            kind=str(meta.get("kind", "said")),
            time=float(meta.get("time", 0.0)),
            score=1.0 - (record.distance or 0.0),
        )

    def export(self, user_id: str) -> dict[str, Any]:
        collection = self._collection(user_id, create=False)
        rows = collection.get() if collection is not None else []
        items = [
            {**self._memory(r).to_json(), "reply": r.metadata.get("reply")}
            for r in sorted(rows, key=lambda r: float(r.metadata.get("time", 0.0)))
        ]
        return {"character": self.character_id, "user_id": user_id, "memories": items}

    def forget(self, user_id: str) -> int:
        """Delete everything remembered about this user; returns how many memories there were."""
        name = self._name(user_id)
        self._collections.pop(name, None)
        collection = self.namespace.find(name)
        if collection is None:
            return 0
        count = collection.count()
        self.namespace.delete_collection(name)
        return count

    def users(self) -> list[dict[str, Any]]:
        out = []
        for name in self.namespace.list_collections():
            if not name.startswith("user-"):
                continue
            collection = self.namespace.find(name)
            if collection is not None:
                out.append({"user_id": collection.metadata.get("user_id"), "memories": collection.count()})
        return out


def render(memories: Sequence[Memory]) -> list[str]:
    """Memories as prompt lines; {{user}} is replaced with the user's name at assembly."""
    lines = []
    for memory in memories:
        if memory.kind == "fact":
            lines.append(memory.text)
        else:
            day = time.strftime("%Y-%m-%d", time.localtime(memory.time))
            lines.append(f"[{day}] {{{{user}}}}: {memory.text}")
    return lines
