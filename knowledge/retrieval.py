"""The retrieval stage of a turn: lorebook, memory, knowledge and classic lines in one budget.

`ContextBuilder` is what the turn pipeline calls (it satisfies `companion.session.ContextSource`):

    builder = ContextBuilder.for_character(character, settings)
    blocks = await builder.build(text, user_id=..., recent=history[-6:], budget_tokens=500,
                                 count_tokens=llm.count_tokens)
    ... the reply is generated ...
    await builder.remember(user_id, text, reply)

The budget is shared in a fixed order (lorebook, memory, knowledge, classic lines), each kind
capped by its share in `knowledge.shares`; a kind that needs less passes the rest on.
Everything that can block (embedding, the vector store, the first index build) runs in a
worker thread so the event loop keeps streaming.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from companion import plugins
from companion.config import PluginSpec, Settings
from companion.events import ContextBlock
from companion.messages import ChatMessage
from knowledge import lexical
from knowledge.embedders import Embedder
from knowledge.index import BuildCancelled, BuildReport, CorpusSource, Hit, KnowledgeIndex, ProgressCallback
from knowledge.lorebook import WorldInfo
from knowledge.memory import MemoryStore, render
from knowledge.settings import KnowledgeSettings
from knowledge.store import StoreError, VectorStore

log = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]
SHORT_QUERY_CHARS = 6
READY_WAIT_S = 5.0  # a turn waits this long for an index check or a small build before going on without it

_plugins: dict[tuple[str, str, str], Any] = {}
_plugins_lock = threading.Lock()


def shared_plugin(kind: plugins.PluginKind, spec: PluginSpec, context: plugins.PluginContext) -> Any:
    """One embedder / store per configuration and data dir, shared by every character."""
    key = (kind, spec.model_dump_json(), str(context.data_dir))
    with _plugins_lock:
        if key not in _plugins:
            _plugins[key] = plugins.create(kind, spec, context)
        return _plugins[key]


@dataclass
class Retrieved:
    """A turn's retrieval with its timings (what `--show-context` and the benches print)."""

    blocks: list[ContextBlock]
    timings_ms: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)


class ContextBuilder:
    def __init__(
        self,
        character,
        *,
        embedder: Embedder,
        store: VectorStore,
        settings: KnowledgeSettings | None = None,
        cache_dir,
    ) -> None:
        self.character = character
        self.settings = settings or KnowledgeSettings()
        self.embedder = embedder
        self.store = store
        self.index = KnowledgeIndex(
            CorpusSource.from_character(character), embedder, store, self.settings, cache_dir=cache_dir
        )
        self.memory = MemoryStore(character.id, embedder, store, max_items=self.settings.memory_max_items)
        self.world = WorldInfo.from_book(character.card.character_book, self.settings, char=character.card.name)
        self.book_budget = character.card.character_book.token_budget if character.card.character_book else None
        self._ready = False
        self._ready_lock = threading.Lock()
        self._builder_thread: threading.Thread | None = None
        self._cancel = threading.Event()
        self._warned_building = False
        self.last_report: BuildReport | None = None
        self.ready_wait_s = READY_WAIT_S

    @classmethod
    def for_character(cls, character, settings: Settings) -> ContextBuilder:
        context = plugins.PluginContext(data_dir=settings.data_dir)
        return cls(
            character,
            embedder=shared_plugin("embedder", settings.embedder, context),
            store=shared_plugin("store", settings.store, context),
            settings=settings.knowledge,
            cache_dir=settings.data_dir / "knowledge" / character.id,
        )

    # ------------------------------------------------------------ index

    def prepare(
        self, *, progress: ProgressCallback | None = None, force: bool = False, build: bool | None = None
    ) -> BuildReport | None:
        """Bring the index up to date with the corpus, blocking (cheap when nothing changed).
        Without `build`, builds only when `knowledge.auto_build` is on."""
        build = self.settings.auto_build if build is None else build
        with self._ready_lock:
            if build or force:
                report = self.index.build(progress=progress, force=force, cancel=self._cancel)
                for warning in report.warnings:
                    log.warning("%s: %s", self.character.id, warning)
                self.last_report = report
            self._warm_up()
            self._ready = True
            return self.last_report

    def _warm_up(self) -> None:
        """Load what the first turn would otherwise wait for: jieba's dictionary, the BM25
        indexes, the relevance baseline (seconds on a slow machine, once per process)."""
        lexical.tokenize("预热 warm-up")
        self.memory.relevance()
        for kind in ("lore", "line"):
            try:
                if self.index.count(kind):
                    self.index.lexical_index(kind)
            except StoreError as error:
                log.warning("knowledge index of %s unavailable: %s", self.character.id, error)

    def start(self) -> None:
        """Bring the index up to date in a background thread (chat starts at once; knowledge
        joins the turns when the index is ready). Stopped cleanly when the process exits."""
        if self._ready or self._builder_thread is not None:
            return
        self._builder_thread = threading.Thread(
            target=self._background_build, name=f"index-{self.character.id}", daemon=True
        )
        _running.add(self)
        self._builder_thread.start()

    def _background_build(self) -> None:
        try:
            self.prepare()
        except BuildCancelled:
            pass
        except Exception as error:  # a failed build must not take the chat down
            log.error("building the knowledge index of %s failed: %s", self.character.id, error)
        finally:
            _running.discard(self)

    def stop(self, timeout: float = 5.0) -> None:
        """Ask a background build to stop after its current batch and wait for it."""
        self._cancel.set()
        if self._builder_thread is not None:
            self._builder_thread.join(timeout)

    def wait_ready(self, timeout: float | None = None) -> bool:
        self.start()
        if self._builder_thread is not None:
            self._builder_thread.join(timeout)
        return self._ready

    # ------------------------------------------------------------ a turn

    async def build(self, user_text: str, **turn: Any) -> list[ContextBlock]:
        """The blocks of `retrieve` (which names the keywords `turn` takes), run in a worker thread."""
        retrieved = await asyncio.to_thread(self.retrieve, user_text, **turn)
        return retrieved.blocks

    def retrieve(
        self,
        user_text: str,
        *,
        user_id: str,
        recent: Sequence[ChatMessage] = (),
        budget_tokens: int,
        count_tokens: TokenCounter,
        user_name: str | None = None,
    ) -> Retrieved:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        index_ready = self._ready or self.wait_ready(self.ready_wait_s)
        if not index_ready and not self._warned_building:
            self._warned_building = True
            log.warning(
                "the knowledge index of %s is still being built; until it is ready turns use the lorebook "
                "and memory only (`companion knowledge build %s` builds it in the foreground)",
                self.character.id,
                self.character.id,
            )
        timings["prepare"] = _ms(started)
        s = self.settings
        char = self.character.card.name
        user = user_name or "{{user}}"
        out = Retrieved(blocks=[], timings_ms=timings)
        remaining = max(0, budget_tokens)
        carry = 0

        def allowance(share: float) -> int:
            return min(remaining, int(budget_tokens * share) + carry)

        # 1. lorebook: deterministic, scanned over the recent chat with speaker names
        mark = time.perf_counter()
        cap = allowance(s.shares.lorebook)
        if self.book_budget:
            cap = min(cap, self.book_budget)
        messages = [f"{user if m.role == 'user' else char}: {m.content}" for m in recent if m.role != "system"]
        messages.append(f"{user}: {user_text}")
        used = 0
        if len(self.world):
            for activation in self.world.scan(messages, budget_tokens=cap, count_tokens=count_tokens, user=user):
                entry = activation.entry
                out.blocks.append(
                    ContextBlock(
                        kind="lorebook", text=entry.content.strip(), source=f"lorebook:{entry.label}", score=None
                    )
                )
                used += activation.tokens
        carry, remaining = cap - used, remaining - used
        out.tokens["lorebook"] = used
        timings["lorebook"] = _ms(mark)

        # one query vector for memory, knowledge and lines
        mark = time.perf_counter()
        query = self._query_text(user_text, recent)
        vector = self.embedder.embed_queries([query])[0]
        timings["embed"] = _ms(mark)

        # 2. memory of this user
        mark = time.perf_counter()
        cap = allowance(s.shares.memory)
        used = 0
        if s.memory and s.memory_k:
            try:
                memories = self.memory.recall(user_id, user_text, k=s.memory_k, vector=vector, min_z=s.memory_min_z)
            except StoreError as error:
                log.warning("memory recall failed for %s: %s", self.character.id, error)
                memories = []
            for memory, text in zip(memories, render(memories), strict=True):
                tokens = count_tokens(text)
                if used + tokens > cap:
                    continue
                used += tokens
                out.blocks.append(
                    ContextBlock(kind="memory", text=text, source=f"memory:{memory.id}", score=round(memory.score, 4))
                )
        carry, remaining = cap - used, remaining - used
        out.tokens["memory"] = used
        timings["memory"] = _ms(mark)

        # 3. knowledge, 4. classic lines
        for kind, block_kind, k, share, min_z in (
            ("lore", "knowledge", s.lore_k if index_ready else 0, s.shares.knowledge, s.knowledge_min_z),
            ("line", "classic_line", s.lines_k if index_ready else 0, s.shares.classic_line, s.lines_min_z),
        ):
            mark = time.perf_counter()
            cap = allowance(share)
            used = 0
            for hit in self._relevant(self._search(query, kind, k, vector), vector, min_z)[:k]:
                tokens = count_tokens(hit.text)
                if used + tokens > cap:
                    continue
                used += tokens
                out.blocks.append(
                    ContextBlock(kind=block_kind, text=hit.text, source=hit.source, score=round(hit.score, 5))
                )
            carry, remaining = cap - used, remaining - used
            out.tokens[block_kind] = used
            timings[block_kind] = _ms(mark)
        timings["total"] = _ms(started)
        return out

    def _search(self, query: str, kind: str, k: int, vector: np.ndarray) -> list[Hit]:
        if k <= 0:
            return []
        try:
            return self.index.search(query, kind=kind, k=k * 2, vector=vector)  # type: ignore[arg-type]
        except StoreError as error:
            log.warning(
                "knowledge search failed for %s (%s); run `companion knowledge build %s`",
                self.character.id,
                error,
                self.character.id,
            )
            return []

    def _relevant(self, hits: list[Hit], vector: np.ndarray, min_z: float) -> list[Hit]:
        return self.memory.relevance().keeps(hits, vector, min_z=min_z)

    @staticmethod
    def _query_text(user_text: str, recent: Sequence[ChatMessage]) -> str:
        """The user's turn; a very short one ("why?", "然后呢") is read with the message before it."""
        text = user_text.strip()
        if len(text) < SHORT_QUERY_CHARS and recent:
            return f"{recent[-1].content.strip()}\n{text}"
        return text

    # ------------------------------------------------------------ memory

    async def remember(self, user_id: str, user_text: str, reply: str) -> None:
        if not self.settings.memory:
            return
        try:
            await asyncio.to_thread(self.memory.remember, user_id, user_text, reply)
        except StoreError as error:
            log.warning("could not store memory for %s: %s", self.character.id, error)

    async def forget(self, user_id: str) -> int:
        """/forget: everything this character remembers about the user."""
        return await asyncio.to_thread(self.memory.forget, user_id)


_running: set[ContextBuilder] = set()


@atexit.register
def _stop_background_builds() -> None:
    for builder in list(_running):
        builder.stop(timeout=10)


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 2)
