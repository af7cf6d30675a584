"""The same store code against a real chroma server (`chroma run`) on loopback."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from companion.plugins import PluginContext
from knowledge.index import CorpusSource, KnowledgeIndex
from knowledge.memory import MemoryStore
from knowledge.store import ChromaStore, StoreError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    if not Path(exe).exists():
        pytest.skip("the `chroma` command (chromadb's server) is not installed")
    port = free_port()
    path = tmp_path_factory.mktemp("chroma-server")
    log = (path / "server.log").open("w")
    process = subprocess.Popen(
        [exe, "run", "--path", str(path / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if process.poll() is not None:
                pytest.skip(f"chroma run exited with {process.returncode}: {(path / 'server.log').read_text()[-500:]}")
            try:
                if httpx.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                pytest.skip("chroma run did not answer within 60 s")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def test_index_and_memory_on_a_server(chroma_server: str, character, e5, tmp_path: Path) -> None:
    store = ChromaStore(ChromaStore.Settings(url=chroma_server, prefix="t1"), PluginContext(data_dir=tmp_path / "d"))
    index = KnowledgeIndex(CorpusSource.from_character(character), e5, store, cache_dir=tmp_path / "cache")
    report = index.build()
    assert report.totals["line"] == 4 and not (tmp_path / "d" / "knowledge").exists()  # nothing stored locally
    assert "吸尘器" in index.search("芝士最怕什么？", kind="lore", k=1)[0].text

    # a second machine with another cache dir sees the same index and skips unchanged files
    other = ChromaStore(ChromaStore.Settings(url=chroma_server, prefix="t1"), PluginContext(data_dir=tmp_path / "e"))
    again = KnowledgeIndex(CorpusSource.from_character(character), e5, other, cache_dir=tmp_path / "cache2")
    assert again.build().unchanged == 4
    assert "灯塔看守人姓周" in again.search("灯塔看守人是谁？", kind="lore", k=1)[0].text

    memory = MemoryStore(character.id, e5, store)
    memory.remember("alice", "我最喜欢吃草莓蛋糕。")
    assert [m.text for m in MemoryStore(character.id, e5, other).recall("alice", "我喜欢吃什么？", k=2)] == [
        "我最喜欢吃草莓蛋糕。"
    ]
    assert MemoryStore(character.id, e5, other).recall("bob", "我喜欢吃什么？", k=2) == []
    names = [c.name for c in other.namespace("knowledge/x").client().list_collections()]
    assert all(name.startswith("t1-") for name in names)

    index.reset()  # on a server, a reset drops this character's collections only
    assert index.namespace.list_collections() == []
    assert memory.export("alice")["memories"]


def test_unreachable_server_is_a_clear_error(tmp_path: Path, e5) -> None:
    store = ChromaStore(ChromaStore.Settings(url=f"http://127.0.0.1:{free_port()}"), PluginContext(data_dir=tmp_path))
    with pytest.raises(StoreError, match=r"127\.0\.0\.1"):
        store.namespace("knowledge/x").collection("c")
