"""Chat history per (character, user, channel), kept in SQLite in the data directory."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from companion.messages import ChatMessage

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    character TEXT NOT NULL,
    user TEXT NOT NULL,
    channel TEXT NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    interrupted INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_conversation ON messages (character, user, channel, id);
"""


class ConversationKey(BaseModel):
    """Whose conversation: nothing of one key's history reaches another key's prompt."""

    model_config = ConfigDict(frozen=True)
    character: str
    user: str = "local"
    channel: str = "terminal"


class HistoryStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def load(self, key: ConversationKey, limit: int = 400) -> list[ChatMessage]:
        with self._lock:
            rows = self._db.execute(
                "SELECT role, content FROM messages WHERE character=? AND user=? AND channel=? "
                "ORDER BY id DESC LIMIT ?",
                (key.character, key.user, key.channel, limit),
            ).fetchall()
        return [ChatMessage(role=role, content=content) for role, content in reversed(rows)]

    def append(self, key: ConversationKey, messages: list[ChatMessage], *, interrupted: bool = False) -> None:
        now = time.time()
        rows = [(key.character, key.user, key.channel, m.role, m.content, int(interrupted), now) for m in messages]
        with self._lock:
            self._db.executemany(
                "INSERT INTO messages (character, user, channel, role, content, interrupted, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def clear(self, key: ConversationKey) -> int:
        with self._lock:
            cursor = self._db.execute(
                "DELETE FROM messages WHERE character=? AND user=? AND channel=?",
                (key.character, key.user, key.channel),
            )
        return cursor.rowcount

    def export_user(self, user: str) -> list[dict]:
        with self._lock:
            rows = self._db.execute(
                "SELECT character, channel, role, content, interrupted, created FROM messages WHERE user=? ORDER BY id",
                (user,),
            ).fetchall()
        fields = ("character", "channel", "role", "content", "interrupted", "created")
        return [dict(zip(fields, row, strict=True)) for row in rows]

    def delete_user(self, user: str) -> int:
        with self._lock:
            return self._db.execute("DELETE FROM messages WHERE user=?", (user,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
