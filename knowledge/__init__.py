"""What a character knows: her world, her lines and her user.

    corpus/ files --textio--> lines --chunking--> chunks --embedders--> vectors --store--> chromadb
                                                        +-lexical--> BM25 (jieba for Chinese)
    a turn: retrieval.ContextBuilder -> lorebook (World Info) + memory (per user)
                                        + index.search (dense + BM25, rank-fused) -> ContextBlocks

Importing this package is cheap: chromadb, jieba, torch and the embedders load when first used.
"""
