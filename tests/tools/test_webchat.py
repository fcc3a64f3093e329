"""`python -m pipeline.tools.chat RUN web=true` in a real headless browser: Debian's chromium driven by selenium.

The page is typed into as a user would; its replies are checked against the server's own greedy answers for the
same conversation, so a page that dropped the system prompt or the earlier turns would fail."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.browser import chromium, needs_chromium
from tests.helpers.servers import server

pytestmark = needs_chromium
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def page_url(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("webchat") / "server.log"
    with server("chat", str(tiny_run), "web=true", "max_new_tokens=64", log=log) as url:
        assert "chat page: http://127.0.0.1:" in log.read_text()
        yield url


@pytest.fixture
def browser() -> Iterator[object]:
    with chromium() as driver:
        yield driver


def server_answer(url: str, messages: list[dict[str, str]]) -> str:
    with urllib.request.urlopen(f"{url}/v1/models", timeout=30) as response:
        model = json.loads(response.read())["data"][0]["id"]  # the run's default name, as the page uses it
    body = json.dumps({"model": model, "messages": messages, "max_tokens": MAX_TOKENS}).encode()
    request = urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["message"]["content"]


def say(driver, text: str, replies_before: int) -> str:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "input").send_keys(text)
    driver.find_element(By.ID, "send").click()
    done = "#messages .msg.assistant:not(.pending)"
    WebDriverWait(driver, 120, poll_frequency=0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, done)) > replies_before
        or d.find_elements(By.CSS_SELECTOR, "#messages .msg.error"))
    assert not driver.find_elements(By.CSS_SELECTOR, "#messages .msg.error"), driver.find_element(
        By.CSS_SELECTOR, "#messages .msg.error").text
    # textContent, not .text: the rendered text drops the leading newlines the model may write
    return driver.find_elements(By.CSS_SELECTOR, done)[-1].get_attribute("textContent")


def test_the_page_chats_with_history_system_prompt_and_clear(page_url: str, browser, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    browser.get(page_url)
    assert "run" in browser.title
    browser.find_element(By.ID, "system").send_keys("You are a terse calculator.")
    tokens = browser.find_element(By.ID, "max-tokens")
    tokens.clear()
    tokens.send_keys(str(MAX_TOKENS))

    first = say(browser, "What is 2 + 3?", 0)
    second = say(browser, "And 4 + 4?", 1)
    system = {"role": "system", "content": "You are a terse calculator."}
    turns = [system, {"role": "user", "content": "What is 2 + 3?"}]
    assert first and first == server_answer(page_url, turns)
    assert second == server_answer(page_url, [*turns, {"role": "assistant", "content": first},
                                              {"role": "user", "content": "And 4 + 4?"}])
    shot = tmp_path / "webchat.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    browser.find_element(By.ID, "clear").click()
    assert browser.find_elements(By.CSS_SELECTOR, "#messages .msg") == []
    # A cleared conversation starts over: the first question gets the first answer again.
    assert say(browser, "What is 2 + 3?", 0) == first
