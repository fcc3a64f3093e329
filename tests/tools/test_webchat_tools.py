"""The chat page runs the run's own tools, in a real headless chromium (tests/helpers/browser.py): a tiny GRPO run
trained with env=calculator, served with its logits scripted to call the calculator
(tests/helpers/scripted_serve.py) and tools=on. The page offers the run's tool schemas, reads the streamed
tool_call deltas, runs each call through the server's /v1/tools/call (the run's calculator under its limits),
sends the result back as a role=tool turn and shows the answer; a model that never stops calling is cut off at
max_tool_calls, as the terminal chat cuts it off."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.browser import chromium, needs_chromium
from tests.helpers.servers import server

pytestmark = needs_chromium
ANSWERED = "#messages .msg.assistant:not(.pending):not(.calling)"


@pytest.fixture(scope="module")
def page_url(tool_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("webchat_tools") / "server.log"
    with server("tests.helpers.scripted_serve", str(tool_run), "name=tools", "tools=on", "max_tool_calls=2",
                log=log) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as driver:
        yield driver


def say(driver, text: str) -> list[tuple[str, str]]:
    """Types `text`, waits for the turn's answer; every bubble of the page as (kind, text)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    before = len(driver.find_elements(By.CSS_SELECTOR, ANSWERED))
    driver.find_element(By.ID, "input").send_keys(text)
    driver.find_element(By.ID, "send").click()
    WebDriverWait(driver, 120, poll_frequency=0.2).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, ANSWERED)) > before
        or d.find_elements(By.CSS_SELECTOR, "#messages .msg.error"))
    return [(b.get_attribute("class").removeprefix("msg "), b.get_attribute("textContent"))
            for b in driver.find_elements(By.CSS_SELECTOR, "#messages .msg")]


def test_the_page_runs_the_runs_tools_and_answers_from_their_result(page_url: str, browser) -> None:
    from selenium.webdriver.common.by import By

    with urllib.request.urlopen(f"{page_url}/v1/tools?conversation=probe", timeout=30) as response:
        offered = json.loads(response.read())
    assert [t["function"]["name"] for t in offered["tools"]] == ["calculate"] and offered["max_calls"] == 2

    browser.get(page_url)
    bubbles = say(browser, "What is 2 + 3?")
    # the script answers from the result only when the call and its result came back rendered as training did
    assert bubbles == [("user", "What is 2 + 3?"), ("tool", 'tool> calculate({"expression": "2 + 3"}) -> 5'),
                       ("assistant", "The answer is 5.")]

    # a model that never stops calling: max_tool_calls=2 calls run, the third reply is the turn's last
    browser.find_element(By.ID, "clear").click()
    bubbles = say(browser, "LOOP forever")
    tools = [text for kind, text in bubbles if kind == "tool"]
    assert tools == ['tool> calculate({"expression": "2 + 3"}) -> 5'] * 2
    assert bubbles[-1] == ("assistant", 'calculate({"expression": "2 + 3"})')
    assert not [kind for kind, _ in bubbles if kind == "error"]


def test_the_tool_route_answers_as_training_did(page_url: str) -> None:
    request = urllib.request.Request(f"{page_url}/v1/tools/call", data=json.dumps(
        {"conversation": "c1", "name": "calculate", "arguments": {"expression": "6 * 7"}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == {"content": "42"}
    request = urllib.request.Request(f"{page_url}/v1/tools/call", data=json.dumps(
        {"conversation": "c1", "name": "search", "arguments": {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:  # TRL's error text, as the model reads it
        assert json.loads(response.read()) == {"content": "{'error': 'Tool search not found.'}"}
