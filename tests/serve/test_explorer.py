"""The explorer page in a real browser: headless Chromium through Selenium against the app on 127.0.0.1
(``devtools.browser``).

Each state is saved as a screenshot under the test's temporary folder.
"""

from __future__ import annotations

import json

import pytest

from devtools.smoke import PAGE_SETTLED

from .conftest import BASE, http

pytestmark = [pytest.mark.ray]

ROWS = """[...document.querySelectorAll('#recs tbody tr')].map(tr => ({
    id: tr.dataset.id, from: tr.dataset.from, title: tr.querySelector('.title').textContent,
    cf: tr.querySelector('.cf-rank').textContent, retrieval: tr.querySelector('.retrieval-rank').textContent}))"""


@pytest.fixture(scope="module")
def browser():
    from devtools.browser import Browser

    with Browser() as b:
        yield b


def settle(browser) -> str:
    """The page's state once it has answered: 'ready' or 'error' (one reading decides)."""
    return browser.wait_for(PAGE_SETTLED, timeout=60)


def test_known_user_shows_ten_items_with_titles_and_branch_ranks(serve_url, browser, tmp_path):
    browser.goto(f"{BASE}/")
    browser.type("#user_id", "1")
    browser.click("#submit")
    assert settle(browser) == "ready", browser.eval("document.body.innerText")
    rows = browser.eval(ROWS)
    assert len(rows) == 10
    assert all(r["title"].strip() for r in rows)
    assert all(r["cf"].isdigit() or r["retrieval"].isdigit() for r in rows)  # each row names its branch
    assert {r["from"] for r in rows} <= {"cf", "retrieval", "both"}
    # the page shows what the API answers, nothing of its own
    api = http("POST", "/recommend", {"user_id": "1", "k": 10})[1]
    assert [r["id"] for r in rows] == [it["item_id"] for it in api["items"]]
    assert [r["title"] for r in rows] == [it["title"] for it in api["items"]]
    marked = browser.eval("[...document.querySelectorAll('#history li.in-query')].map(li => li.dataset.id)")
    assert marked and marked == api["query"]["items"]
    assert browser.eval("$('query-text').textContent") == " · ".join(api["query"]["texts"])
    assert browser.eval("location.search") == "?user_id=1"
    browser.screenshot(tmp_path / "known_user.png")


def test_unknown_user_shows_the_404_message(serve_url, browser, tmp_path):
    browser.goto(f"{BASE}/?user_id=no-such-user")  # the URL alone runs the request
    assert settle(browser) == "error"
    message = browser.eval("$('error').hidden ? '' : $('error').textContent")
    assert message.startswith("404") and "unknown user 'no-such-user'" in message
    assert browser.eval("$('result').hidden")
    browser.screenshot(tmp_path / "unknown_user.png")


def test_new_user_from_three_typed_titles_gets_recommendations(serve_url, browser, tmp_path):
    browser.goto(f"{BASE}/")
    picked = []
    for title in ("Star Wars", "Toy Story", "Fargo"):
        browser.type("#item_search", title)
        first = f"[...document.querySelectorAll('#suggestions button')].find(b => b.textContent.startsWith({json.dumps(title)}))"
        picked.append(browser.wait_for(f"{first} && {first}.dataset.id"))
        browser.click("#suggestions button", title)  # a real click: the button must be shown and enabled
    chips = browser.eval("[...document.querySelectorAll('#chips .chip')].map(c => c.dataset.id)")
    assert chips == picked == ["50", "1", "100"]
    browser.click("#submit")
    assert settle(browser) == "ready", browser.eval("document.body.innerText")
    rows = browser.eval(ROWS)
    assert len(rows) == 10 and not {r["id"] for r in rows} & set(picked)  # seen items are not recommended
    assert browser.eval("location.search") == "?history=50%2C1%2C100"
    history = browser.eval("[...document.querySelectorAll('#history li')].map(li => li.dataset.id)")
    assert history == picked
    browser.screenshot(tmp_path / "new_user.png")


def test_a_link_opens_the_same_view(serve_url, browser, tmp_path):
    browser.goto(f"{BASE}/?history=50,181&q=a%20light-hearted%20comedy&k=5")
    assert settle(browser) == "ready", browser.eval("document.body.innerText")
    assert len(browser.eval(ROWS)) == 5
    assert browser.eval("$('intent').value") == "a light-hearted comedy"
    assert "light-hearted comedy" in browser.eval("$('query-text').textContent")
    assert float(browser.eval("document.body.dataset.requestMs")) > 0
    browser.screenshot(tmp_path / "link.png")


def test_bad_input_shows_the_api_message(serve_url, browser):
    browser.goto(f"{BASE}/?history=50,999999")
    assert settle(browser) == "error"
    message = browser.eval("$('error').textContent")
    assert message.startswith("422") and "999999" in message
