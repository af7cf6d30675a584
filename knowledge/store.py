"""The `store` plugin kind: named vector collections, embedded or on a server.

`chroma` (built in) keeps each namespace ("knowledge/mochi", "memory/mochi") in its own
chromadb PersistentClient folder under the data directory; with `url` set, the same code
talks to a chroma server through chromadb's HttpClient and the namespace becomes a prefix of
the collection names (`companion-knowledge-mochi-...`).

Vectors always come from our embedder: chromadb's default embedding function (which
downloads a model) is never used, and telemetry is off.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, Field

from companion.errors import CompanionError
from companion.plugins import PluginContext

log = logging.getLogger(__name__)

PAGE = 2000  # rows per get(): chromadb's SQLite side refuses very large variable lists


class StoreError(CompanionError):
    """The vector store failed (unreadable index, server down)."""


@dataclass
class Record:
    id: str
    document: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    distance: float | None = None
    embedding: np.ndarray | None = None


class Collection(Protocol):
    name: str

    def count(self) -> int: ...

    @property
    def metadata(self) -> dict[str, Any]: ...

    def set_metadata(self, metadata: dict[str, Any]) -> None: ...

    def upsert(self, ids: Sequence[str], embeddings: np.ndarray, documents: Sequence[str], metadatas) -> None: ...

    def delete(self, ids: Sequence[str] | None = None, where: dict | None = None) -> None: ...

    def query(self, vector: np.ndarray, n: int, *, documents: bool = True) -> list[Record]: ...

    def get(
        self,
        ids: Sequence[str] | None = None,
        *,
        where: dict | None = None,
        documents: bool = True,
        embeddings: bool = False,
        limit: int | None = None,
    ) -> list[Record]: ...

    def iterate(self, *, documents: bool = True) -> Iterator[Record]: ...


class Namespace(Protocol):
    label: str

    def collection(self, name: str, *, metadata: dict[str, Any] | None = None) -> Collection: ...

    def find(self, name: str) -> Collection | None: ...

    def delete_collection(self, name: str) -> None: ...

    def list_collections(self) -> list[str]: ...

    def reset(self) -> None:
        """Throw away everything in this namespace (a corrupt index is rebuilt from the corpus)."""
        ...


class VectorStore(Protocol):
    def namespace(self, path: str) -> Namespace: ...


# ---------------------------------------------------------------- chroma


class ChromaCollection:
    def __init__(self, raw) -> None:
        self._raw = raw
        self.name = raw.name

    def count(self) -> int:
        return _call(self._raw.count)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._raw.metadata or {})

    def set_metadata(self, metadata: dict[str, Any]) -> None:
        current = self.metadata
        current.update(metadata)
        _call(self._raw.modify, metadata={k: v for k, v in current.items() if not k.startswith("hnsw:")})

    def upsert(self, ids, embeddings, documents, metadatas) -> None:
        step = 1000
        for i in range(0, len(ids), step):
            _call(
                self._raw.upsert,
                ids=list(ids[i : i + step]),
                embeddings=np.asarray(embeddings[i : i + step], dtype=np.float32),
                documents=list(documents[i : i + step]),
                metadatas=[_clean_metadata(m) for m in metadatas[i : i + step]],
            )

    def delete(self, ids=None, where=None) -> None:
        if ids is not None:
            ids = list(ids)
            for i in range(0, len(ids), PAGE):
                _call(self._raw.delete, ids=ids[i : i + PAGE])
        elif where is not None:
            _call(self._raw.delete, where=where)

    def query(self, vector: np.ndarray, n: int, *, documents: bool = True) -> list[Record]:
        include = ["distances", "metadatas"] + (["documents"] if documents else [])
        result = _call(
            self._raw.query,
            query_embeddings=np.asarray(vector, dtype=np.float32).reshape(1, -1),
            n_results=max(1, n),
            include=include,
        )
        ids = result["ids"][0]
        docs = (result.get("documents") or [[None] * len(ids)])[0]
        metas = (result.get("metadatas") or [[None] * len(ids)])[0]
        dists = result["distances"][0]
        return [
            Record(id=i, document=d or "", metadata=dict(m or {}), distance=float(x))
            for i, d, m, x in zip(ids, docs, metas, dists, strict=True)
        ]

    def get(self, ids=None, *, where=None, documents=True, embeddings=False, limit=None) -> list[Record]:
        include = ["metadatas"] + (["documents"] if documents else []) + (["embeddings"] if embeddings else [])
        if ids is not None:
            ids = list(ids)
            out = []
            for i in range(0, len(ids), PAGE):
                out += self._records(_call(self._raw.get, ids=ids[i : i + PAGE], include=include))
            return out
        return list(self._pages(include, where=where, limit=limit))

    def iterate(self, *, documents: bool = True) -> Iterator[Record]:
        """Every record, a page at a time (a 100k-chunk collection never sits in one list)."""
        return self._pages(["metadatas"] + (["documents"] if documents else []))

    def _pages(self, include: list[str], *, where: dict | None = None, limit: int | None = None) -> Iterator[Record]:
        offset = 0
        while limit is None or offset < limit:
            page = PAGE if limit is None else min(PAGE, limit - offset)
            got = self._records(_call(self._raw.get, where=where, include=include, limit=page, offset=offset))
            yield from got
            offset += len(got)
            if len(got) < page:
                return

    @staticmethod
    def _records(result) -> list[Record]:
        ids = result["ids"]
        docs = result.get("documents")
        metas = result.get("metadatas")
        embs = result.get("embeddings")
        return [
            Record(
                id=ids[i],
                document=(docs[i] if docs is not None else "") or "",
                metadata=dict((metas[i] if metas is not None else None) or {}),
                embedding=np.asarray(embs[i], dtype=np.float32) if embs is not None else None,
            )
            for i in range(len(ids))
        ]


def _clean_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """chromadb metadata values are str/int/float/bool and never None or empty dicts."""
    out = {}
    for key, value in metadata.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value)
        out[key] = value
    return out or {"_": 0}


def _call(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except StoreError:
        raise
    except Exception as error:  # chromadb raises many types; callers handle one
        raise StoreError(f"vector store: {type(error).__name__}: {error}") from error


class ChromaNamespace:
    def __init__(self, store: ChromaStore, path: str) -> None:
        self._store = store
        self.path = path
        self.label = path
        self._client = None
        self._lock = threading.Lock()

    @property
    def local_dir(self) -> Path | None:
        if self._store.settings.url:
            return None
        return self._store.root / self.path / "chroma"

    def _prefix(self) -> str:
        if not self._store.settings.url:
            return ""
        return f"{self._store.settings.prefix}-{self.path.replace('/', '-')}-"

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = self._store.make_client(self.local_dir)
            return self._client

    def collection(self, name: str, *, metadata: dict[str, Any] | None = None) -> ChromaCollection:
        raw = _call(
            self.client().get_or_create_collection,
            self._prefix() + name,
            embedding_function=None,
            metadata=metadata or None,
            configuration={"hnsw": {"space": "cosine"}},
        )
        return ChromaCollection(raw)

    def find(self, name: str) -> ChromaCollection | None:
        if self._prefix() + name not in self._names():
            return None
        return ChromaCollection(_call(self.client().get_collection, self._prefix() + name, embedding_function=None))

    def delete_collection(self, name: str) -> None:
        if self._prefix() + name in self._names():
            _call(self.client().delete_collection, self._prefix() + name)

    def _names(self) -> list[str]:
        collections = _call(self.client().list_collections)
        return [getattr(c, "name", c) for c in collections]

    def list_collections(self) -> list[str]:
        prefix = self._prefix()
        return [n[len(prefix) :] for n in self._names() if n.startswith(prefix)]

    def reset(self) -> None:
        if self.local_dir is None:
            for name in self.list_collections():
                self.delete_collection(name)
            return
        with self._lock:
            self._store.release_client(self.local_dir)
            self._client = None
            folder = self.local_dir
            if folder.exists():
                aside = folder.with_name(f"chroma.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
                for old in folder.parent.glob("chroma.corrupt-*"):
                    shutil.rmtree(old, ignore_errors=True)
                folder.rename(aside)
                log.warning("moved the damaged index %s aside to %s", folder, aside)


class ChromaStore:
    """chromadb, embedded (PersistentClient under the data dir) or a server (`url`)."""

    class Settings(BaseModel):
        url: str | None = Field(None, description="A chroma server, e.g. http://localhost:8000 (else embedded).")
        prefix: str = Field("companion", description="Collection name prefix on a shared server.")
        tenant: str = "default_tenant"
        database: str = "default_database"
        headers: dict[str, str] = Field(default_factory=dict, description="e.g. an auth token for the server.")
        path: Path | None = Field(None, description="Folder for embedded indexes (default: the data dir).")

    def __init__(self, settings: Settings | None = None, context: PluginContext | None = None) -> None:
        self.settings = settings or self.Settings()
        data_dir = context.data_dir if context else Path.cwd() / ".data"
        self.root = Path(self.settings.path).expanduser() if self.settings.path else data_dir
        self._namespaces: dict[str, ChromaNamespace] = {}
        self._lock = threading.Lock()

    def namespace(self, path: str) -> ChromaNamespace:
        with self._lock:
            if path not in self._namespaces:
                self._namespaces[path] = ChromaNamespace(self, path)
            return self._namespaces[path]

    def make_client(self, local_dir: Path | None):
        import chromadb
        from chromadb.config import Settings as ChromaSettings

        chroma_settings = ChromaSettings(anonymized_telemetry=False, allow_reset=False)
        if self.settings.url:
            parsed = urlparse(self.settings.url if "://" in self.settings.url else f"http://{self.settings.url}")
            try:
                return chromadb.HttpClient(
                    host=parsed.hostname or "localhost",
                    port=parsed.port or (443 if parsed.scheme == "https" else 8000),
                    ssl=parsed.scheme == "https",
                    headers=self.settings.headers or None,
                    settings=chroma_settings,
                    tenant=self.settings.tenant,
                    database=self.settings.database,
                )
            except Exception as error:
                raise StoreError(f"cannot reach the chroma server at {self.settings.url}: {error}") from error
        assert local_dir is not None
        local_dir.mkdir(parents=True, exist_ok=True)
        try:
            return chromadb.PersistentClient(path=str(local_dir), settings=chroma_settings)
        except Exception as error:
            raise StoreError(f"cannot open the index in {local_dir}: {type(error).__name__}: {error}") from error

    @staticmethod
    def release_client(local_dir: Path) -> None:
        """Drop chromadb's process-wide cached system for this folder so it can be reopened."""
        from chromadb.api.shared_system_client import SharedSystemClient

        identifier = str(local_dir)
        system = SharedSystemClient._identifier_to_system.pop(identifier, None)
        SharedSystemClient._identifier_to_refcount.pop(identifier, None)
        if system is not None:
            try:
                system.stop()
            except Exception as error:  # a broken system may fail to stop; it is dropped either way
                log.debug("stopping chroma system for %s: %s", local_dir, error)
