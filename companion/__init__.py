"""companion: character companion bots.

A character is a folder (card, corpus, adapter, voice); a turn flows through plugins
(ASR -> retrieval -> LLM -> TTS) and comes out as typed events.
"""

__version__ = "0.1.0"
