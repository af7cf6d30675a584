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

    def revise_last_reply(self, key: ConversationKey, content: str) -> bool:
        """Replace her last message with `content` and mark it interrupted (after a barge-in: what the
        user actually heard); empty content deletes it. False when there is no reply to revise."""
        where = "character=? AND user=? AND channel=?"
        with self._lock:
            row = self._db.execute(
                f"SELECT id, role FROM messages WHERE {where} ORDER BY id DESC LIMIT 1",
                (key.character, key.user, key.channel),
            ).fetchone()
            if row is None or row[1] != "assistant":
                return False
            if content.strip():
                self._db.execute("UPDATE messages SET content=?, interrupted=1 WHERE id=?", (content, row[0]))
            else:
                self._db.execute("DELETE FROM messages WHERE id=?", (row[0],))
        return True

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
