"""The web page in a real headless Chromium against a real server: streamed text, audio with
lip-sync, the avatar's expression, the mic path; a screenshot is kept in test-artifacts/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from companion.frontends.server import create_app
from companion.frontends.speech import Heard
from tests.frontends.conftest import ToneSpeech
from tests.support.uvicorn_server import running

pytestmark = pytest.mark.slow

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def chromium_path() -> str:
    path = os.environ.get("COMPANION_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.skip("no Chromium (Debian: apt-get install chromium; or set COMPANION_CHROMIUM)")
    return path


class MicSpeech(ToneSpeech):
    """Tone 'speech' out; 'hears' whatever PCM the page sends and records it."""

    def __init__(self, settings) -> None:
        super().__init__(settings)
        self.heard: list[np.ndarray] = []

    @property
    def asr_available(self) -> bool:
        return True

    async def transcribe(self, samples, languages=None) -> Heard:
        self.heard.append(samples)
        return Heard(text="hello from the microphone", language="en")


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (the dev extra)")
    executable = chromium_path()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--autoplay-policy=no-user-gesture-required",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
            ],
        )
        yield browser
        browser.close()


def test_page_streams_text_speaks_moves_and_listens(browser, make_hub, frontend_settings) -> None:
    speech = MicSpeech(frontend_settings)
    app = create_app(frontend_settings, make_hub(speech=speech))
    errors: list[str] = []
    with running(app) as base:
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(f"{msg.text} {msg.location}") if msg.type == "error" else None)
        page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)

        # The real model: the reply streams into the chat log.
        page.goto(f"{base}/?character=tester&user=pw-real")
        page.wait_for_function("document.querySelector('#name').textContent === 'Tester'")
        assert page.locator("#log li.assistant").first.inner_text() == "Hi, I'm Tester."
        assert page.locator("#stage").get_attribute("data-avatar") == "builtin"
        page.fill("#input", "Hello! Tell me about yourself.")
        page.press("#input", "Enter")
        bubble = page.locator("#log li.assistant").nth(1)
        # Seen while still streaming: text before the turn ended.
        page.wait_for_function(
            "(() => { const b = document.querySelectorAll('#log li.assistant')[1];"
            " return b && b.classList.contains('streaming') && b.textContent.length > 0; })()",
            timeout=120_000,
        )
        page.wait_for_function(
            "document.querySelectorAll('#log li.assistant')[1].dataset.done === '1'", timeout=180_000
        )
        events = page.evaluate("window.companion.events")
        deltas = [e for e in events if e["type"] == "text_delta"]
        end = next(e for e in events if e["type"] == "turn_end")
        assert len(deltas) >= 2
        assert bubble.inner_text().strip() == end["text"].strip() or not end["text"]

        # The scripted character: an expression, audio played with lip-sync, tags not shown.
        page.select_option("#character", "scripted")
        page.wait_for_function("document.querySelector('#name').textContent === 'Scripty'")
        assert page.locator("#speak").is_checked()
        page.fill("#input", "hi")
        page.click("#send")
        page.wait_for_function("document.querySelector('#stage').dataset.expression === 'joy'", timeout=30_000)
        page.wait_for_function("window.companion.audioPlayed >= 2", timeout=60_000)
        assert page.evaluate("window.companion.maxMouth") > 0.5
        assert page.locator("#stage").get_attribute("data-mood") == "joy"
        reply = page.locator("#log li.assistant").last
        page.wait_for_function("document.querySelectorAll('#log li.assistant')[1].dataset.done === '1'")
        assert reply.inner_text().startswith("Hello there! I am so happy to see you.")
        assert "[joy]" not in reply.inner_text() and reply.locator("em.action").inner_text() == "*waves*"

        # The mic: fake capture device -> WebAudio -> 16 kHz PCM frames -> the server hears it.
        page.click("#mic")
        page.wait_for_selector("#mic.recording")
        page.wait_for_timeout(1500)
        page.click("#mic")
        page.wait_for_function("window.companion.events.some(e => e.type === 'transcript')", timeout=30_000)
        page.wait_for_function(
            "document.querySelectorAll('#log li.assistant')[2]?.dataset.done === '1'", timeout=60_000
        )
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "web-page.png"))
        page.close()
    assert speech.heard, "the page's speech never reached the server"
    heard = speech.heard[0]
    assert 0.8 < heard.size / 16_000 < 3.0, f"{heard.size / 16_000:.2f} s of speech for 1.5 s recorded"
    assert float(np.abs(heard).max()) > 0.05, "the fake microphone's tone should not arrive as silence"
    assert not [e for e in errors if "favicon" not in e], errors
