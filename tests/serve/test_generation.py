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
