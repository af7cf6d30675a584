"""History persists per (character, user, channel) and never mixes conversations."""

from __future__ import annotations

from pathlib import Path

from companion.history import ConversationKey, HistoryStore
from companion.messages import ChatMessage


def test_history_survives_reopening_and_is_isolated(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    alice = ConversationKey(character="mochi", user="alice")
    bob = ConversationKey(character="mochi", user="bob")
    store = HistoryStore(path)
    store.append(alice, [ChatMessage(role="user", content="I like tea"), ChatMessage(role="assistant", content="Tea!")])
    store.append(bob, [ChatMessage(role="user", content="secret of bob")])
    store.close()

    reopened = HistoryStore(path)
    assert [m.content for m in reopened.load(alice)] == ["I like tea", "Tea!"]
    assert [m.content for m in reopened.load(bob)] == ["secret of bob"]
    assert reopened.load(ConversationKey(character="mochi", user="alice", channel="discord")) == []
    assert [m.content for m in reopened.load(alice, limit=1)] == ["Tea!"]
    assert reopened.clear(alice) == 2 and reopened.load(alice) == []
    assert [r["content"] for r in reopened.export_user("bob")] == ["secret of bob"]
    assert reopened.delete_user("bob") == 1 and reopened.load(bob) == []
