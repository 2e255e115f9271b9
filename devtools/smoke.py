"""Start the app on the artifacts, send real HTTP requests and print the answers; ``make demo`` ends here.

q2rec smoke [--dataset NAME] [--artifacts ROOT] [--engine auto|none] [--user USER_ID] [--screenshot PNG]

With ``--screenshot``, the explorer page (``GET /?user_id=USER_ID``) is opened in headless Chromium and
saved as a PNG, with the page's own load and request times.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path
from typing import Any

from serve.run import DEFAULT_CONFIG, app_args, start_app


def post(url: str, body: dict[str, Any], timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def show(title: str, body: dict[str, Any], status: int, answer: dict[str, Any]) -> None:
    print(f"\n== {title}\nPOST /recommend {json.dumps(body)} -> {status}")
    if status != 200:
        print(json.dumps(answer, indent=2))
        return
    q = answer["query"]
    more = len(q.get("texts", [])) - 1
    text = (f"{q['text']!r}" + (f" (+{more} more)" if more > 0 else "") if q["text"] else
            f"none (retrieval from the vectors of history items {q['items']}: the fusion gives the LLM query no weight)")  # fmt: skip
    print(f"query ({q['source']}): {text}" + (f"  + intent {q['intent']!r}" if q.get("intent") else ""))
    print(
        f"alpha (CF weight) {answer['alpha']}, degraded {answer['degraded']}, timings ms {answer['timings_ms']}"
    )
    print(f"{'#':>2}  {'item':>5}  {'score':>7}  {'cf rank':>7}  {'ret rank':>8}  title")
    for n, it in enumerate(answer["items"], 1):
        print(f"{n:>2}  {it['item_id']:>5}  {it['score']:7.3f}  {it['cf_rank'] or '-':>7}  "
              f"{it['retrieval_rank'] or '-':>8}  {it['title']}")  # fmt: skip


# the explorer page's state once it has answered ('ready' or 'error'), falsy while it is still asking
PAGE_SETTLED = "['ready', 'error'].includes(document.body.dataset.state) && document.body.dataset.state"


def screenshot(url: str, user: str, path: Path) -> None:
    """The explorer page for ``user`` as a PNG, and what the page measured."""
    from devtools.browser import Browser

    with Browser() as b:
        for _ in range(2):  # the first load also starts the browser's own machinery: the second is measured
            b.goto(f"{url}/?user_id={user}")
            state = b.wait_for(PAGE_SETTLED, 60)
        b.screenshot(path)
        print(f"\n== the explorer page: {url}/?user_id={user} ({state}); screenshot {path}")
        print(
            b.eval("document.getElementById('perf').textContent")
            or b.eval("document.body.innerText.slice(0, 300)")
        )


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--engine", choices=["auto", "vllm", "transformers", "none"])
    ap.add_argument("--user", default="1")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--screenshot", type=Path, help="save the explorer page for --user as this PNG")


def command(a: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    args = app_args(DEFAULT_CONFIG, a.dataset, a.artifacts, a.engine)
    from ray import serve

    try:
        url = start_app(args, "127.0.0.1", a.port)
        print(f"q2rec app is up on {url}")
        requests = [
            ("a known user", {"user_id": a.user, "k": 10}),
            ("the same user with a free-text intent",
             {"user_id": a.user, "k": 5, "query": "a light-hearted comedy for a family evening"}),
            ("a cold-start user: a history, no user id",
             {"history": ["50", "181", "172"], "k": 5}),
        ]  # fmt: skip
        worst = 200
        for title, body in requests:
            status, answer = post(f"{url}/recommend", body)
            show(title, body, status, answer)
            worst = max(worst, status)
        if a.screenshot:
            screenshot(url, a.user, a.screenshot)
        return 0 if worst == 200 else 1
    finally:
        serve.shutdown()
