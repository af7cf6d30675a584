"""A character's corpus as a searchable index: chunks in the vector store, BM25 beside them.

Per character and embedder there are three collections in the namespace `knowledge/<id>`:
`<embedder>-lore` (facts), `<embedder>-line` (exchanges of classic lines) and
`<embedder>-files` (the manifest: one record per corpus file with its content hash, its chunk
counts and the chunking settings). A build compares the corpus with the manifest: unchanged
files are skipped, changed files are re-chunked and re-embedded, removed files are deleted.
A file is marked complete only after all its chunks are written, so an interrupted build
resumes cleanly. Before building, the index is checked (counts agree with the manifest, a
stored vector finds itself); a damaged index is moved aside and rebuilt from the corpus,
which is never written to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np

from knowledge import chunking, lexical
from knowledge.chunking import Chunk, ChunkKind, FileKind, SpeakerMatcher
from knowledge.embedders import Embedder
from knowledge.settings import KnowledgeSettings
from knowledge.store import Collection, Namespace, Record, StoreError, VectorStore
from knowledge.textio import NotText, TextFile, file_hash, open_text

log = logging.getLogger(__name__)

KINDS: tuple[ChunkKind, ...] = ("lore", "line")
SCENE_DIRS = {"scenes", "scene", "lines", "script", "scripts", "texts", "台词", "剧本", "场景"}
LORE_DIRS = {"lore", "wiki", "world", "knowledge", "设定", "资料", "背景"}
MAX_JSON_BYTES = 64 * 1024 * 1024
SNIFF_LINES = 200


@dataclass(frozen=True)
class CorpusSource:
    """What to index: a folder, and the names the character goes by in scene files."""

    id: str
    corpus_dir: Path
    speakers: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    """Glob patterns (relative to corpus_dir) of the files to index; empty means every file."""

    @classmethod
    def from_character(cls, character) -> CorpusSource:
        card = character.card
        companion = card.extensions.get("companion") or {}
        aliases = companion.get("speakers") or []
        if isinstance(aliases, str):
            aliases = [aliases]
        names = [card.name, card.nickname or "", *[str(a) for a in aliases]]
        return cls(id=character.id, corpus_dir=character.corpus_dir, speakers=tuple(n for n in names if n))


@dataclass
class Hit:
    id: str
    text: str
    kind: ChunkKind
    score: float
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    cosine: float | None = None
    dense_rank: int | None = None
    lexical_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "kind": self.kind,
            "score": round(self.score, 6),
            "source": self.source,
            "cosine": None if self.cosine is None else round(self.cosine, 4),
            "dense_rank": self.dense_rank,
            "lexical_rank": self.lexical_rank,
            "id": self.id,
        }


@dataclass
class BuildProgress:
    bytes_done: int
    bytes_total: int
    files_done: int
    files_total: int
    chunks: int
    file: str = ""


@dataclass
class BuildReport:
    files: int = 0
    indexed: list[str] = field(default_factory=list)
    unchanged: int = 0
    removed: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    chunks_added: int = 0
    totals: dict[str, int] = field(default_factory=dict)
    speakers: list[str] = field(default_factory=list)
    rebuilt_corrupt: bool = False
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.indexed or self.removed or self.rebuilt_corrupt)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "indexed": self.indexed,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "warnings": self.warnings,
            "chunks_added": self.chunks_added,
            "totals": self.totals,
            "speakers": self.speakers,
            "rebuilt_corrupt": self.rebuilt_corrupt,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _FileEntry:
    rel: str
    path: Path
    size: int
    hash: str = ""


ProgressCallback = Callable[[BuildProgress], None]
SearchMode = Literal["hybrid", "dense", "lexical"]


class BuildCancelled(Exception):
    """A build stopped on request; the next build resumes where it stopped."""


class KnowledgeIndex:
    def __init__(
        self,
        source: CorpusSource,
        embedder: Embedder,
        store: VectorStore,
        settings: KnowledgeSettings | None = None,
        *,
        cache_dir: Path,
    ) -> None:
        self.source = source
        self.embedder = embedder
        self.settings = settings or KnowledgeSettings()
        self.namespace: Namespace = store.namespace(f"knowledge/{source.id}")
        self.cache_dir = Path(cache_dir)
        self._collections: dict[str, Collection] = {}
        self._lexical: dict[str, lexical.LexicalIndex] = {}
        self._counts: dict[str, int] = {}

    # ------------------------------------------------------------ collections

    def _name(self, kind: str) -> str:
        return f"{self.embedder.key}-{kind}"

    def _collection(self, kind: str) -> Collection:
        if kind not in self._collections:
            meta = {"embedder": self.embedder.key, "dim": self.embedder.dim, "character": self.source.id}
            self._collections[kind] = self.namespace.collection(self._name(kind), metadata=meta)
        return self._collections[kind]

    def _manifest(self) -> dict[str, dict[str, Any]]:
        return {r.id: r.metadata for r in self._collection("files").get(documents=False)}

    def _write_manifest(self, rel: str, meta: dict[str, Any]) -> None:
        self._collection("files").upsert([rel], np.ones((1, 1), dtype=np.float32), [rel], [meta])

    def _drop_caches(self) -> None:
        self._collections.clear()
        self._lexical.clear()
        self._counts.clear()

    # ------------------------------------------------------------ integrity

    def verify(self) -> str | None:
        """None if the index looks sound, else what is wrong with it."""
        try:
            manifest = self._manifest()
            for kind in KINDS:
                collection = self._collection(kind)
                count = collection.count()
                complete = [m for m in manifest.values() if m.get("state") == "complete"]
                if len(complete) == len(manifest):
                    expected = sum(int(m.get(kind, 0)) for m in complete)
                    if count != expected:
                        return f"{kind} collection has {count} chunks, the manifest says {expected}"
                if count and not self._finds_own_vectors(collection, count):
                    return f"{kind} vector index does not find its own vectors"
        except StoreError as error:
            return str(error)
        return None

    @staticmethod
    def _finds_own_vectors(collection: Collection, count: int, probes: int = 5) -> bool:
        """Whether most of a few stored vectors come back as their own nearest neighbour. HNSW is
        approximate: at 100k chunks about 1 stored vector in 50-100 is not found from itself, so one
        miss is no sign of damage (it used to throw away, and re-embed, a whole sound index)."""
        stored = [r for r in collection.get(documents=False, embeddings=True, limit=probes) if r.embedding is not None]
        return KnowledgeIndex._mostly_found(collection, [r.embedding for r in stored], count)

    @staticmethod
    def _mostly_found(collection: Collection, vectors: list[np.ndarray], count: int) -> bool:
        """Whether more than half of `vectors` have a stored vector at distance ~0 (none: False)."""
        found = 0
        for vector in vectors:
            hits = collection.query(vector, min(3, count), documents=False)
            found += bool(hits) and hits[0].distance is not None and hits[0].distance <= 1e-3
        return found * 2 > len(vectors)

    def reset(self) -> None:
        """Delete this character's index (all embedders); the corpus is not touched."""
        self._drop_caches()
        self.namespace.reset()
        for folder in self.cache_dir.glob("lexical-*"):
            shutil.rmtree(folder, ignore_errors=True)

    # ------------------------------------------------------------ build

    def build(
        self, *, progress: ProgressCallback | None = None, force: bool = False, cancel: threading.Event | None = None
    ) -> BuildReport:
        """Bring the index in line with the corpus. `cancel` stops it between batches."""
        started = time.perf_counter()
        report = BuildReport()
        problem = None if force else self.verify()
        if force or problem:
            if problem:
                log.warning("knowledge index for %s is damaged (%s); rebuilding it", self.source.id, problem)
                report.warnings.append(f"index was damaged ({problem}); rebuilt from the corpus")
                report.rebuilt_corrupt = True
                self.reset()
            else:
                for kind in (*KINDS, "files"):
                    self.namespace.delete_collection(self._name(kind))
                self._drop_caches()

        files = self._scan()
        report.files = len(files)
        manifest = self._manifest()
        files_meta = self._collection("files").metadata
        for entry in files:
            entry.hash = file_hash(entry.path)

        current = {f.rel for f in files}
        removed = sorted(set(manifest) - current)
        changed = [f for f in files if self._file_needs_work(manifest.get(f.rel), f, None)]
        if changed or removed or "speakers" not in files_meta:
            speakers = self._resolve_speakers(files, manifest, report)
            self._collection("files").set_metadata({"speakers": json.dumps(speakers, ensure_ascii=False)})
        else:
            speakers = json.loads(files_meta["speakers"])
        report.speakers = speakers
        config = self._config_key(speakers)

        for rel in removed:
            self._delete_file_chunks(rel, manifest[rel])
            self._collection("files").delete(ids=[rel])
            report.removed.append(rel)

        todo = [f for f in files if self._file_needs_work(manifest.get(f.rel), f, config)]
        report.unchanged = len(files) - len(todo)
        todo_rels = {f.rel for f in todo}
        for entry in files:
            old = manifest.get(entry.rel)
            if entry.rel not in todo_rels and old and old.get("file_kind") == "skipped":
                report.skipped.append((entry.rel, str(old.get("reason", "skipped"))))
        total_bytes = sum(f.size for f in todo)
        done_bytes = 0
        matcher = SpeakerMatcher(speakers)
        for i, entry in enumerate(todo):
            old = manifest.get(entry.rel)
            if old:
                self._delete_file_chunks(entry.rel, old)

            def tick(chunks: int, entry=entry, i=i, done=done_bytes) -> None:
                if progress:
                    chunks_so_far = report.chunks_added + chunks
                    progress(BuildProgress(done, total_bytes, i, len(todo), chunks_so_far, entry.rel))

            if cancel is not None and cancel.is_set():
                raise BuildCancelled(f"stopped after {i} of {len(todo)} files")
            added = self._index_file(entry, config, matcher, report, tick, cancel)
            report.chunks_added += added
            done_bytes += entry.size
            if progress:
                progress(BuildProgress(done_bytes, total_bytes, i + 1, len(todo), report.chunks_added, entry.rel))

        self._counts.clear()
        report.totals = {kind: self.count(kind) for kind in KINDS}
        self._refresh_lexical(force=report.changed)
        report.seconds = time.perf_counter() - started
        return report

    def _scan(self) -> list[_FileEntry]:
        root = self.source.corpus_dir
        if not root.is_dir():
            return []
        out = []
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if any(part.startswith(".") for part in Path(rel).parts) or not path.is_file():
                continue
            if self.source.include and not any(PurePosixPath(rel).match(p) for p in self.source.include):
                continue
            out.append(_FileEntry(rel=rel, path=path, size=path.stat().st_size))
        return out

    def _config_key(self, speakers: Sequence[str]) -> str:
        s = self.settings
        parts = [
            chunking.CHUNKER_VERSION,
            self.embedder.key,
            s.chunk_tokens,
            s.line_chunk_tokens,
            s.overlap_sentences,
            sorted(speakers),
        ]
        return hashlib.sha1(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:16]

    @staticmethod
    def _file_needs_work(old: dict | None, entry: _FileEntry, config: str | None) -> bool:
        if not old or old.get("state") != "complete" or old.get("file_hash") != entry.hash:
            return True
        return config is not None and old.get("config") != config

    def _delete_file_chunks(self, rel: str, meta: dict[str, Any]) -> None:
        if meta.get("state") == "complete":
            n = int(meta.get("lore", 0)) + int(meta.get("line", 0))
            ids = [_chunk_id(rel, meta.get("file_hash", ""), i) for i in range(n)]
            for kind in KINDS:
                if int(meta.get(kind, 0)):
                    self._collection(kind).delete(ids=ids)
        else:
            for kind in KINDS:
                self._collection(kind).delete(where={"file": rel})

    # ------------------------------------------------------------ per file

    def _classify(self, entry: _FileEntry, text: TextFile) -> FileKind:
        suffix = entry.path.suffix.lower()
        if suffix in {".jsonl", ".ndjson", ".json"}:
            return "dialogues"
        folders = {p.lower() for p in Path(entry.rel).parts[:-1]}
        if folders & SCENE_DIRS:
            return "scenes"
        if folders & LORE_DIRS or suffix in {".md", ".markdown"}:
            return "lore"
        head = []
        for line in text.lines():
            if line.strip():
                head.append(line)
            if len(head) >= SNIFF_LINES:
                break
        return "scenes" if chunking.looks_like_scene(head) else "lore"

    def _open(self, entry: _FileEntry, report: BuildReport) -> TextFile | None:
        try:
            return open_text(entry.path)
        except NotText as reason:
            message = f"skipped {entry.path}: {reason}"
            log.warning(message)
            report.skipped.append((entry.rel, str(reason)))
            report.warnings.append(message)
        except OSError as error:
            message = f"skipped {entry.path}: unreadable ({error.strerror or error})"
            log.warning(message)
            report.skipped.append((entry.rel, f"unreadable: {error}"))
            report.warnings.append(message)
        return None

    def _resolve_speakers(self, files: list[_FileEntry], manifest: dict, report: BuildReport) -> list[str]:
        """The character's names as they appear in scene files: the card's names if any scene
        speaker matches them, else the speaker with the most lines (a bare corpus)."""
        names = list(self.source.speakers)
        matcher = SpeakerMatcher(names)
        counts: dict[str, int] = {}
        for entry in files:
            old = manifest.get(entry.rel)
            if old and old.get("file_hash") == entry.hash and old.get("file_kind") != "scenes":
                continue
            text = self._quiet_open(entry)
            if text is None or self._classify(entry, text) != "scenes":
                continue
            for speaker, n in chunking.scene_speakers(text.lines()).items():
                counts[speaker] = counts.get(speaker, 0) + n
        if not counts:
            return names
        found = sorted((s for s in counts if matcher(s)), key=lambda s: -counts[s])
        if names and found:
            return list(dict.fromkeys(names + found))
        top = max(counts, key=lambda s: counts[s])
        if counts[top] >= 0.2 * sum(counts.values()):
            message = f"no scene speaker matches {names or 'the card'}; using {top!r}, who has the most lines"
            log.warning(message)
            report.warnings.append(message)
            return list(dict.fromkeys([*names, top]))
        return names

    @staticmethod
    def _quiet_open(entry: _FileEntry) -> TextFile | None:
        try:
            return open_text(entry.path)
        except (NotText, OSError):
            return None

    def _chunks(
        self, entry: _FileEntry, text: TextFile, kind: FileKind, matcher: SpeakerMatcher, report: BuildReport
    ) -> Iterator[Chunk]:
        s = self.settings
        count = self.embedder.count_tokens
        lore_tokens = min(s.chunk_tokens, self.embedder.max_tokens - 8)
        line_tokens = min(s.line_chunk_tokens, self.embedder.max_tokens - 8)
        if kind == "dialogues":
            stats = chunking.DialogueStats()
            lines: Iterator[str] = text.lines()
            if entry.path.suffix.lower() == ".json":
                if entry.size > MAX_JSON_BYTES:
                    raise ValueError(f"a .json dataset over {MAX_JSON_BYTES >> 20} MB: convert it to .jsonl")
                lines = chunking.json_array_lines("\n".join(text.lines()))
            yield from chunking.chunk_dialogues(lines, count=count, max_tokens=line_tokens, stats=stats)
            if stats.bad_lines:
                shown = ", ".join(map(str, stats.bad_lines[:5])) + (" ..." if len(stats.bad_lines) > 5 else "")
                message = f"{entry.path}: {len(stats.bad_lines)} line(s) are not dialogue records (line {shown})"
                log.warning(message)
                report.warnings.append(message)
        elif kind == "scenes":
            yield from chunking.chunk_scenes(text.lines(), is_character=matcher, count=count, max_tokens=line_tokens)
        else:
            yield from chunking.chunk_lore(
                text.lines(), count=count, max_tokens=lore_tokens, overlap=s.overlap_sentences
            )

    def _index_file(
        self, entry: _FileEntry, config: str, matcher: SpeakerMatcher, report: BuildReport, tick, cancel=None
    ) -> int:
        text = self._open(entry, report)
        base = {"file_hash": entry.hash, "config": config, "bytes": entry.size}
        if text is None:
            reason = report.skipped[-1][1]
            self._write_manifest(entry.rel, {**base, **_SKIPPED, "reason": reason})
            return 0
        kind = self._classify(entry, text)
        self._write_manifest(entry.rel, {**base, "state": "partial", "file_kind": kind, "encoding": text.encoding})
        counts = {"lore": 0, "line": 0}
        batch: list[tuple[str, Chunk]] = []
        n = 0
        try:
            for chunk in self._chunks(entry, text, kind, matcher, report):
                batch.append((_chunk_id(entry.rel, entry.hash, n), chunk))
                counts[chunk.kind] += 1
                n += 1
                if len(batch) >= self.settings.embed_batch:
                    self._write_batch(entry, batch)
                    batch = []
                    tick(n)
                    if cancel is not None and cancel.is_set():
                        raise BuildCancelled(f"stopped in {entry.rel}")
            self._write_batch(entry, batch)
        except (ValueError, UnicodeError) as error:
            message = f"skipped {entry.path}: {error}"
            log.warning(message)
            report.skipped.append((entry.rel, str(error)))
            report.warnings.append(message)
            self._delete_file_chunks(entry.rel, {"state": "partial"})
            self._write_manifest(entry.rel, {**base, **_SKIPPED, "reason": str(error)})
            return 0
        self._write_manifest(
            entry.rel, {**base, "state": "complete", "file_kind": kind, "encoding": text.encoding, **counts}
        )
        report.indexed.append(entry.rel)
        return n

    def _write_batch(self, entry: _FileEntry, batch: list[tuple[str, Chunk]]) -> None:
        if not batch:
            return
        vectors = self.embedder.embed_documents([self._embedding_text(c) for _, c in batch])
        for kind in KINDS:
            rows = [(i, (cid, c)) for i, (cid, c) in enumerate(batch) if c.kind == kind]
            if not rows:
                continue
            self._collection(kind).upsert(
                [cid for _, (cid, _) in rows],
                vectors[[i for i, _ in rows]],
                [c.text for _, (_, c) in rows],
                [
                    {
                        "file": entry.rel,
                        "file_hash": entry.hash[:16],
                        "line_start": c.line_start,
                        "line_end": c.line_end,
                        "heading": c.heading or None,
                        "speakers": list(c.speakers) or None,
                    }
                    for _, (_, c) in rows
                ],
            )

    def _embedding_text(self, chunk: Chunk) -> str:
        name = self.source.speakers[0] if self.source.speakers else "Character"
        return chunk.text.replace("{{char}}", name).replace("{{user}}", "User")

    # ------------------------------------------------------------ lexical

    def _fingerprint(self, kind: str) -> str:
        manifest = self._manifest()
        rows = sorted((rel, m.get("file_hash"), m.get("config"), m.get(kind, 0)) for rel, m in manifest.items())
        data = json.dumps([self.embedder.key, kind, rows], ensure_ascii=False)
        return hashlib.sha1(data.encode()).hexdigest()

    def _lexical_dir(self, kind: str) -> Path:
        return self.cache_dir / f"lexical-{self._name(kind)}"

    def _refresh_lexical(self, *, force: bool) -> None:
        for kind in KINDS:
            fingerprint = self._fingerprint(kind)
            index = None if force else lexical.LexicalIndex.load(self._lexical_dir(kind), fingerprint)
            if index is None:
                records = list(self._collection(kind).iterate())
                index = lexical.LexicalIndex.build([r.id for r in records], [r.document for r in records])
                index.save(self._lexical_dir(kind), fingerprint)
            self._lexical[kind] = index

    def lexical_index(self, kind: str) -> lexical.LexicalIndex:
        """The BM25 index of `kind` (loaded from its cache, or rebuilt from the store)."""
        if kind not in self._lexical:
            self._refresh_lexical(force=False)
        return self._lexical[kind]

    # ------------------------------------------------------------ search

    def chunks(self, kind: ChunkKind) -> Iterator[Record]:
        """Every stored chunk of `kind`, a page at a time."""
        return self._collection(kind).iterate()

    def count(self, kind: str) -> int:
        if kind not in self._counts:
            self._counts[kind] = self._collection(kind).count()
        return self._counts[kind]

    def search(
        self,
        query: str,
        *,
        kind: ChunkKind,
        k: int,
        vector: np.ndarray | None = None,
        mode: SearchMode | None = None,
    ) -> list[Hit]:
        """The best `k` chunks of `kind` for `query`: dense and BM25 ranks fused (RRF). `mode`
        "dense" or "lexical" uses one retriever alone (default: hybrid unless settings say not)."""
        s = self.settings
        mode = mode or ("hybrid" if s.hybrid else "dense")
        collection = self._collection(kind)
        available = self.count(kind)
        if k <= 0 or not available:
            return []
        if vector is None:
            vector = self.embedder.embed_queries([query])[0]
        dense = collection.query(vector, min(s.candidates, available)) if mode != "lexical" else []
        terms = lexical.query_terms(query)
        lexical_hits = self.lexical_index(kind).search(terms, s.candidates) if mode != "dense" else []

        scores: dict[str, float] = {}
        ranks: dict[str, dict[str, int]] = {}
        for rank, record in enumerate(dense, 1):
            scores[record.id] = scores.get(record.id, 0.0) + s.dense_weight / (s.rrf_k + rank)
            ranks.setdefault(record.id, {})["dense"] = rank
        for rank, (cid, _) in enumerate(lexical_hits, 1):
            scores[cid] = scores.get(cid, 0.0) + s.lexical_weight / (s.rrf_k + rank)
            ranks.setdefault(cid, {})["lexical"] = rank
        best = sorted(scores, key=lambda cid: -scores[cid])[:k]

        records: dict[str, Record] = {r.id: r for r in dense}
        missing = [cid for cid in best if cid not in records]
        if missing:
            for record in collection.get(missing, embeddings=True):
                if record.embedding is not None:
                    record.distance = 1.0 - float(np.dot(record.embedding, vector))
                records[record.id] = record
        hits = []
        for cid in best:
            record = records.get(cid)
            if record is None:  # the lexical cache is behind the store; it is rebuilt on the next build
                continue
            hits.append(
                Hit(
                    id=cid,
                    text=record.document,
                    kind=kind,
                    score=scores[cid],
                    source=_source(record.metadata),
                    metadata=record.metadata,
                    cosine=None if record.distance is None else 1.0 - record.distance,
                    dense_rank=ranks[cid].get("dense"),
                    lexical_rank=ranks[cid].get("lexical"),
                )
            )
        return hits

    def status(self) -> dict[str, Any]:
        manifest = self._manifest()
        kinds: dict[str, int] = {}
        for meta in manifest.values():
            kinds[meta.get("file_kind", "?")] = kinds.get(meta.get("file_kind", "?"), 0) + 1
        return {
            "character": self.source.id,
            "corpus": str(self.source.corpus_dir),
            "embedder": self.embedder.key,
            "store": self.namespace.label,
            "files": len(manifest),
            "file_kinds": kinds,
            "chunks": {kind: self._collection(kind).count() for kind in KINDS},
            "speakers": json.loads(self._collection("files").metadata.get("speakers", "[]")),
        }


_SKIPPED = {"state": "complete", "file_kind": "skipped", "lore": 0, "line": 0}


def _chunk_id(rel: str, content_hash: str, n: int) -> str:
    return f"{hashlib.sha1(rel.encode()).hexdigest()[:10]}-{content_hash[:12]}-{n:06d}"


def _source(meta: dict[str, Any]) -> str:
    start, end = meta.get("line_start"), meta.get("line_end")
    where = "" if start is None else (f":{start}" if start == end else f":{start}-{end}")
    return f"{meta.get('file', '?')}{where}"
