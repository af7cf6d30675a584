"""Knowledge settings: chunk sizes, retrieval depth, how the context budget is shared.

They live under `[knowledge]` in the config file (`COMPANION_KNOWLEDGE__LORE_K=6` in the
environment). The embedder and the vector store are plugins chosen by the top-level
`embedder` and `store` settings.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class BudgetShares(BaseModel):
    """The most of the retrieval budget each kind may take, filled in this order; what one
    kind leaves unused goes to the next."""

    lorebook: float = Field(0.4, ge=0, le=1)
    memory: float = Field(0.25, ge=0, le=1)
    knowledge: float = Field(0.4, ge=0, le=1)
    classic_line: float = Field(0.25, ge=0, le=1)


class KnowledgeSettings(BaseModel):
    # ingestion
    chunk_tokens: int = Field(180, ge=16, description="Lore chunk size in embedder tokens.")
    line_chunk_tokens: int = Field(120, ge=16, description="Size of an exchange of classic lines.")
    overlap_sentences: int = Field(1, ge=0, description="Sentences repeated when a long paragraph is split.")
    embed_batch: int = Field(32, ge=1)
    auto_build: bool = Field(True, description="Bring the index up to date when a chat starts.")
    # retrieval
    hybrid: bool = Field(True, description="Fuse BM25 with dense retrieval (False: dense only).")
    candidates: int = Field(
        50,
        ge=1,
        description="Hits taken from each retriever before fusion. Deep enough that an answer one retriever "
        "ranks near the cut-off still reaches the fusion (at 30, tiny numeric changes moved answers across it).",
    )
    rrf_k: int = Field(60, ge=1, description="Reciprocal rank fusion constant.")
    dense_weight: float = 1.0
    lexical_weight: float = 1.0
    lore_k: int = Field(4, ge=0, description="Most lore chunks per turn.")
    lines_k: int = Field(3, ge=0, description="Most exchanges of classic lines per turn.")
    memory_k: int = Field(4, ge=0, description="Most memories recalled per turn.")
    knowledge_min_z: float = Field(
        1.8, description="How far (std devs over everyday text, see knowledge/relevance.py) a lore hit must stand out."
    )
    lines_min_z: float = Field(
        1.0, description="The same for classic lines (lenient: her way of answering 'good night' is worth showing)."
    )
    memory_min_z: float = Field(2.0, description="The same for recalling a memory (profile facts always come).")
    shares: BudgetShares = Field(default_factory=BudgetShares)
    # lorebook defaults where the card's book does not say
    scan_depth: int = Field(2, ge=0, description="Messages scanned for lorebook keys (SillyTavern's default).")
    recursive_scanning: bool = False
    max_recursion_steps: int = Field(0, ge=0, description="0 means no limit.")
    case_sensitive: bool = False
    match_whole_words: bool = False
    # per-user memory
    memory: bool = Field(True, description="Remember what each user tells the character.")
    memory_max_items: int = Field(2000, ge=1, description="Per user; the oldest memories go first (facts stay).")
