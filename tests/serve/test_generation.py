"""The LLM path in Serve with the packaged model (vLLM on CPU here, the GPU code path otherwise): a new
history is served at once with a metadata-built query while one shared generation writes the LLM query."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import app_args, http, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def llm_app(serve_url, serve_artifacts):
    from ray import serve

    from serve.app import build_app

    serve.run(
        # max_history below user 42's 182 items: events and requests must key the query on the same history
        build_app(app_args(serve_artifacts, engine={"backend": "auto"}, max_history=50)),
        name="llm",
        route_prefix="/llm",
    )
    wait_ready("/llm", timeout=300)
    yield serve.get_deployment_handle("QueryDeployment", app_name="llm")
    serve.delete("llm")


def test_new_history_is_served_at_once_and_generation_is_shared(llm_app):
    body = {"history": ["50", "172", "181", "222"], "k": 5}
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: http("POST", "/llm/recommend", body), range(6)))
    for status, out in answers:
        assert status == 200, out
        assert (
            out["query"]["source"] == "fallback" and not out["query"]["cached"] and "llm" in out["degraded"]
        )
    deadline = time.time() + 120
    while time.time() < deadline:
        status, out = http("POST", "/llm/recommend", body)
        if status == 200 and out["query"]["cached"] and out["degraded"] == []:
            break
        time.sleep(0.5)
    assert status == 200 and out["query"]["cached"] and out["degraded"] == [], out
    assert out["query"]["source"] in (
        "llm",
        "fallback",
    )  # fallback: the model's output failed validation twice
    stats = llm_app.stats.remote().result()
    assert stats["llm"] and stats["generated"] == 1  # six concurrent requests, one generation


def test_events_start_the_new_query_at_once(llm_app):
    status, out = http("POST", "/llm/users/42/events", {"item_ids": ["1", "71"]})
    assert status == 200 and out["query_invalidated"]  # the stored query was written for the old history
    deadline = time.time() + 120
    while time.time() < deadline:
        status, out = http("POST", "/llm/recommend", {"user_id": "42", "k": 5})
        if status == 200 and out["query"]["cached"]:
            break
        time.sleep(0.5)
    assert status == 200 and out["query"]["cached"], out


def test_an_item_added_online_is_described_by_the_llm_and_re_embedded(llm_app):
    """The fusion weighs descriptions (``enriched``), so the query replica's engine describes an added item in
    the background, and the retrieval replica re-embeds it as the offline index would: metadata vector +
    weight x description vector."""
    from actors.encoder import TextEncoder
    from actors.prompts import metadata_text
    from actors.retrieval_query import item_vectors

    from .conftest import WEIGHTS, poll

    new = {"item_id": "new-described", "title": "Galaxy Rangers of the Outer Rim", "year": 1997,
           "genres": "Action, Sci-Fi"}  # fmt: skip
    status, out = http("POST", "/llm/items", {"items": [new]})
    assert status == 200, out
    item, waited = poll(lambda: http("GET", f"/llm/items/{new['item_id']}")[1],
                        lambda got: got.get("description"), timeout=180)  # fmt: skip
    assert item.get("description"), f"no description after {waited:.0f}s"
    print(f"\nLLM description of an added item landed {waited:.1f}s after the POST: {item['description']!r}")
    health = http("GET", "/llm/healthz")[1]
    assert health["catalog"]["pending_enrichment"] == 0 and health["counts"]["items_described"] == 1
    assert llm_app.stats.remote().result()["described"] == 1

    # a query alone (no history) is the retrieval vector: the item's score is its cosine with the query
    query = "space rangers adventure"
    status, out = http("POST", "/llm/recommend", {"history": [], "query": query, "k": 50})
    assert status == 200, out
    got = {i["item_id"]: i for i in out["items"]}.get(new["item_id"])
    assert got is not None, f"{new['item_id']} is not in the top 50 for {query!r}"
    encoder = TextEncoder()
    meta, desc, q = encoder.encode([metadata_text(new), item["description"], query])
    want = item_vectors(meta[None], desc[None], WEIGHTS["enriched"])[0] @ q
    assert got["retrieval_score"] == pytest.approx(float(want), abs=1e-4)
