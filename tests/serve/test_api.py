"""The HTTP API on the real app (Serve HTTP, FAISS, EASE, the packaged ML-100K)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from .conftest import TOKEN, http

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.ray]


def test_known_user_gets_fused_items_with_provenance(serve_url):
    status, out = http("POST", "/recommend", {"user_id": "1", "k": 10})
    assert status == 200, out
    assert len(out["items"]) == 10 and out["degraded"] == []
    assert out["query"]["cached"] and out["query"]["source"] == "fallback" and out["query"]["text"]
    assert 0 < out["alpha"] < 1
    scores = [it["score"] for it in out["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(it["cf_rank"] or it["retrieval_rank"] for it in out["items"])
    assert {"cf", "retrieval", "branches", "fuse", "total"} <= set(out["timings_ms"])


def test_ids_may_be_json_numbers(serve_url):
    by_text = http("POST", "/recommend", {"user_id": "1", "k": 5})[1]
    status, by_number = http("POST", "/recommend", {"user_id": 1, "k": 5})
    assert status == 200 and by_number["user_id"] == "1"
    assert [it["item_id"] for it in by_number["items"]] == [it["item_id"] for it in by_text["items"]]
    status, out = http("POST", "/recommend", {"history": [50, 181], "k": 3})
    assert status == 200 and len(out["items"]) == 3
    status, out = http("POST", "/recommend", {"history": [50, 999999], "k": 3})
    assert status == 422 and out["detail"]["unknown_item_ids"] == ["999999"]
    status, out = http("POST", "/recommend", {"user_id": True, "k": 3})
    assert status == 422  # a boolean is not an id


def test_seen_items_are_excluded_unless_asked(serve_url, serve_artifacts):
    from serve.config import ServeAppConfig
    from serve.state import ServingState

    state = ServingState(ServeAppConfig(artifacts=str(serve_artifacts.root)))
    seen = {state.item_ids[i] for i in state.histories["1"]}
    _, out = http("POST", "/recommend", {"user_id": "1", "k": 50})
    assert not seen & {it["item_id"] for it in out["items"]}
    _, out = http("POST", "/recommend", {"user_id": "1", "k": 50, "exclude_seen": False})
    assert seen & {it["item_id"] for it in out["items"]}


def test_an_intent_gets_at_least_half_the_weight(serve_url):
    _, plain = http("POST", "/recommend", {"user_id": "1", "k": 10})
    _, asked = http(
        "POST", "/recommend", {"user_id": "1", "k": 10, "query": "animated films for young children"}
    )
    assert asked["alpha"] <= 0.5 and asked["query"]["intent"]
    assert [it["item_id"] for it in asked["items"]] != [it["item_id"] for it in plain["items"]]


def test_cold_start_history_and_intent(serve_url):
    status, out = http("POST", "/recommend", {"history": ["50", "181"], "k": 5})
    assert status == 200, out
    assert out["user_id"] is None and len(out["items"]) == 5
    assert (
        out["query"]["source"] == "fallback" and "Return of the Jedi" in out["query"]["text"]
    )  # item 181, last
    base = [it["item_id"] for it in out["items"]]
    status, out = http("POST", "/recommend", {"history": ["50", "181"], "k": 5,
                                              "query": "children's animated musical about toys"})  # fmt: skip
    assert status == 200 and out["query"]["intent"].startswith("children")
    assert [it["item_id"] for it in out["items"]] != base  # the intent moved the retrieval branch
    status, out = http("POST", "/recommend", {"history": [], "k": 5, "query": "space opera"})
    assert status == 200 and out["degraded"] == ["cf"]  # no history: retrieval alone
    assert all(it["cf_rank"] is None for it in out["items"])


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"user_id": "no-such-user"}, 404, "no-such-user"),
        ({"history": ["50", "nope", "also-nope"]}, 422, "nope"),
        ({"user_id": "1", "k": 0}, 422, "k"),
        ({"user_id": "1", "k": 100000}, 422, "1682"),
        ({"user_id": "1", "history": ["50"]}, 422, "exactly one"),
        ({}, 422, "exactly one"),
        ({"history": []}, 422, "history"),
        ({"user_id": "1", "colour": "red"}, 422, "colour"),
        ({"user_id": "1", "k": "ten"}, 422, "k"),
    ],
)
def test_bad_input_is_a_4xx_naming_the_field(serve_url, body, status, needle):
    got, out = http("POST", "/recommend", body)
    assert got == status, out
    assert needle in str(out)


def test_unknown_items_are_all_listed(serve_url):
    status, out = http("POST", "/recommend", {"history": ["50", "x1", "x2", "x1"]})
    assert status == 422 and out["detail"]["unknown_item_ids"] == ["x1", "x2"]


def test_oversized_body_is_413(serve_url):
    big = b'{"history": [' + b",".join(b'"50"' for _ in range(40000)) + b"]}"
    status, _ = http("POST", "/recommend", raw=big)
    assert status == 413


def test_items_and_health(serve_url):
    status, item = http("GET", "/items/50")
    assert status == 200 and item["title"].startswith("Star Wars") and item["description"]
    assert http("GET", "/items/nope")[0] == 404
    status, health = http("GET", "/healthz")
    assert status == 200 and health["users"] == 943 and health["items"] == 1682
    assert health["fusion"]["method"] == "adaptive" and health["fusion"]["source"].endswith(
        "serve_fusion.json"
    )
    assert health["cached_queries"] >= 943 * 2


def test_events_need_the_token_and_change_the_query(serve_url):
    body = {"item_ids": ["50", "181"]}
    assert http("POST", "/users/1/events", body)[0] == 401
    assert http("POST", "/users/1/events", body, {"Authorization": "Bearer wrong"})[0] == 401
    _, before = http("POST", "/recommend", {"user_id": "2", "k": 10})
    status, out = http("POST", "/users/2/events", body, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200, out
    assert out["appended"] == 2 and not out["created"] and out["query_invalidated"]
    _, after = http("POST", "/recommend", {"user_id": "2", "k": 10})
    assert not after["query"]["cached"]  # the history changed: the stored query no longer applies
    assert {"50", "181"}.isdisjoint(it["item_id"] for it in after["items"])
    status, out = http(
        "POST", "/users/new-user-7/events", {"item_ids": ["1"]}, {"Authorization": f"Bearer {TOKEN}"}
    )
    assert status == 200 and out["created"] and out["history_length"] == 1
    assert http("POST", "/recommend", {"user_id": "new-user-7", "k": 3})[0] == 200
    status, out = http("POST", "/users/2/events", {"item_ids": ["zz"]}, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 422 and out["detail"]["unknown_item_ids"] == ["zz"]


def test_served_fusion_equals_the_offline_evaluation(serve_url, serve_artifacts):
    """For known users the answer is the offline test-stage fusion of the same config, item for item."""
    from actors.rerank import FusionConfig
    from actors.retrieval_query import RetrievalWeights
    from data_prep.corpus import Corpus
    from tune.branches_store import load_or_compute

    from .conftest import FUSION, WEIGHTS

    corpus = Corpus.load(serve_artifacts)
    b = load_or_compute(serve_artifacts, corpus, "test", "ease", RetrievalWeights(**WEIGHTS))
    from actors.rerank import fuse

    fused = fuse(b.cf, b.retrieval, b.history_len, FusionConfig(**FUSION), 10, b.unseen)
    rows = [r for r in range(len(b.users)) if corpus.user_ids[b.users[r]] != "2"]  # user 2 gets events
    for row in np.random.default_rng(0).choice(rows, 15, replace=False):
        user = str(corpus.user_ids[b.users[row]])
        status, out = http("POST", "/recommend", {"user_id": user, "k": 10})
        assert status == 200
        served = [it["item_id"] for it in out["items"]]
        assert served == corpus.item_ids[fused.ids[row]].tolist(), user
        assert [it["score"] for it in out["items"]] == pytest.approx(fused.scores[row].tolist(), abs=1e-4)


def test_oversized_chunked_body_is_413(serve_url):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", int(serve_url.rsplit(":", 1)[1]), timeout=30)
    chunk = b'{"history": [' + b",".join(b'"50"' for _ in range(20000)) + b"]}"
    conn.request("POST", "/recommend", body=iter([chunk[:50000], chunk[50000:]]),
                 headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)  # fmt: skip
    assert conn.getresponse().status == 413


def test_item_search_finds_titles_and_ids(serve_url):
    status, out = http("GET", "/items?q=star%20wars&limit=5")
    assert status == 200 and out["items"][0]["item_id"] == "50"
    assert out["items"][0]["meta"]["year"] == 1977 and "Sci-Fi" in out["items"][0]["meta"]["genres"]
    status, out = http("GET", "/items?q=STAR&limit=50")
    titles = [it["title"] for it in out["items"]]
    assert status == 200 and 1 < len(titles) <= 50 and all("star" in t.lower() for t in titles)
    starts = [t.lower().startswith("star") for t in titles]
    assert starts == sorted(starts, reverse=True)  # titles starting with the text come first
    assert http("GET", "/items?q=181")[1]["items"][0]["item_id"] == "181"  # an id matches itself first
    assert http("GET", "/items?q=zzzqqq")[1] == {"items": []}


def test_item_lookup_keeps_the_order_and_lists_unknown_ids(serve_url):
    status, out = http("GET", "/items?ids=181,50,1")
    assert status == 200 and [it["item_id"] for it in out["items"]] == ["181", "50", "1"]
    status, out = http("GET", "/items?ids=50,nope,also-nope")
    assert status == 422 and out["detail"]["unknown_item_ids"] == ["nope", "also-nope"]


@pytest.mark.parametrize(
    "query, needle",
    [
        ("", "exactly one of q"),
        ("?q=star&ids=50", "exactly one of q"),
        ("?q=%20%20", "q: empty"),
        ("?q=" + "x" * 101, "q"),
        ("?q=star&limit=0", "limit"),
        ("?q=star&limit=51", "limit"),
        ("?ids=,,", "ids: give 1..100"),
        ("?ids=" + ",".join(["50"] * 101), "ids: give 1..100"),
    ],
)
def test_bad_item_queries_are_422_naming_the_field(serve_url, query, needle):
    status, out = http("GET", "/items" + query)
    assert status == 422 and needle in str(out), out


def test_user_endpoint_shows_the_history_recommend_uses(serve_url):
    status, user = http("GET", "/users/1?limit=5")
    assert status == 200 and user["user_id"] == "1" and len(user["recent"]) == 5
    recent = [it["item_id"] for it in user["recent"]]
    status, out = http("POST", "/recommend", {"user_id": "1", "k": 3, "exclude_seen": False})
    assert (
        status == 200
        and out["query"]["items"]
        and out["query"]["items"] == recent[-len(out["query"]["items"]) :]
    )
    assert http("GET", "/users/nobody")[0] == 404
    assert http("GET", "/users/1?limit=0")[0] == 422
    status, out = http("POST", "/recommend", {"history": [], "query": "a space adventure", "k": 3})
    assert status == 200 and out["query"]["items"] == []  # an intent alone is written from no items


def test_the_page_and_the_api_docs_load_nothing_from_elsewhere(serve_url):
    import urllib.request

    with urllib.request.urlopen(f"{serve_url}/", timeout=30) as r:
        headers = r.headers
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    with urllib.request.urlopen(f"{serve_url}/docs", timeout=30) as r:
        page = r.read().decode()
    assert "/docs-files/swagger-ui-bundle.js" in page and "/openapi.json" in page
    assert "cdn" not in page.lower() and "https://" not in page
    with urllib.request.urlopen(f"{serve_url}/docs-files/swagger-ui-bundle.js", timeout=30) as r:
        assert r.status == 200 and len(r.read()) > 100_000


def test_the_query_limit_is_the_configured_one_and_no_answer_shows_a_path(serve_url, serve_artifacts):
    status, out = http("POST", "/recommend", {"user_id": "1", "query": "x" * 501})
    assert status == 422 and "at most 500 characters" in str(out)
    assert http("POST", "/recommend", {"user_id": "1", "query": "x" * 500})[0] == 200
    status, health = http("GET", "/healthz")
    assert status == 200 and str(serve_artifacts.root.resolve()) not in str(health)
    assert "/" not in health["store"]["name"] and "/" not in health["fusion"]["source"]


def test_counts_and_timings_reach_the_metrics_endpoint(serve_url):
    """What /healthz counts, and each stage's latency, as Prometheus metrics on Ray's metrics port."""
    import urllib.request

    import ray

    from .conftest import poll

    assert http("POST", "/recommend", {"user_id": "3", "k": 5})[0] == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http("POST", "/users/metrics-u1/events", {"item_ids": ["1"]}, auth)[0] == 200
    port = ray.nodes()[0]["MetricsExportPort"]

    samples: dict[str, str] = {}  # one raw line per series, printed for the record

    def scrape() -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            lines = r.read().decode().splitlines()
        out = {}
        for line in lines:
            if line.startswith("ray_q2rec_") and 'application="q2rec"' in line:
                name, value = line.rsplit(" ", 1)
                key = name.split("{")[0] + ":" + next((t.split('"')[1] for t in name.split(",")
                                                       if t.startswith(("kind=", "stage="))), "")  # fmt: skip
                out[key] = out.get(key, 0.0) + float(value)
                samples.setdefault(key, line)
        return out

    # the shipped dashboard queries series the app exports, by the names and labels it exports them under
    dashboard = json.loads((ROOT / "docs" / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queried = {name for expr in exprs for name in re.findall(r"ray_q2rec_\w+", expr)}
    exact = {f"{name}:{value}" for expr in exprs for name in re.findall(r"ray_q2rec_\w+", expr)
             for value in re.findall(r'(?:kind|stage)="([^"]+)"', expr)}  # fmt: skip
    levels = ("ray_q2rec_gauge:items_pending_enrichment", "ray_q2rec_gauge:generations_pending")
    wanted = exact | set(levels) | {"ray_q2rec_count_total:recommend", "ray_q2rec_latency_ms_count:cf"}
    # the agent takes what replicas report about every 10 s: read until all are there (or the deadline)
    seen, waited = poll(scrape, lambda m: wanted <= set(m), timeout=90)
    assert wanted <= set(seen), (sorted(wanted - set(seen)), f"after {waited:.0f}s")
    assert {m.split(":")[0] for m in seen} >= queried
    assert [seen[g] for g in levels] == [0, 0]  # engine none: nothing to describe, no query written
    assert seen["ray_q2rec_count_total:recommend"] >= 1 and seen["ray_q2rec_count_total:events"] >= 1
    assert (
        seen.get("ray_q2rec_count_total:query_none", 0) + seen.get("ray_q2rec_count_total:query_fallback", 0)
        >= 1
    )
    assert seen["ray_q2rec_latency_ms_count:total"] >= 1
    print("\n" + "\n".join(samples[k] for k in sorted(samples) if "_bucket" not in k or k.endswith(":total")))
