"""Retrieval weights in Serve: an app configured with the last item's vector alone (``retrieval_weights``,
what the large-catalog fusion is tuned with) writes no query, and a known user's answer is the offline
test-stage fusion with the same weights, item for item."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import FUSION, app_args, http, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]
PREFIX = "/lastitem"
LAST_ITEM = {"last": 1.0}


@pytest.fixture(scope="module")
def lastitem_app(serve_url, serve_artifacts):
    from ray import serve

    from serve.app import build_app

    cfg = app_args(serve_artifacts, retrieval_weights=LAST_ITEM)  # overrides the weights of fusion.json
    serve.run(build_app(cfg), name="lastitem", route_prefix=PREFIX)
    wait_ready(PREFIX)
    yield PREFIX
    serve.delete("lastitem")


def test_known_users_get_the_offline_fusion_of_the_same_weights(lastitem_app, serve_artifacts):
    from actors.rerank import FusionConfig, fuse
    from actors.retrieval_query import RetrievalWeights
    from data_prep.corpus import Corpus
    from tune.branches_store import load_or_compute

    corpus = Corpus.load(serve_artifacts)
    b = load_or_compute(serve_artifacts, corpus, "test", "ease", RetrievalWeights(**LAST_ITEM))
    fused = fuse(b.cf, b.retrieval, b.history_len, FusionConfig(**FUSION), 10, b.unseen)
    status, health = http("GET", f"{lastitem_app}/healthz")
    assert status == 200
    assert health["fusion"]["retrieval_weights"] == {"last": 1.0, "recent": 0.0, "llm": 0.0, "enriched": 0.0}
    for row in np.random.default_rng(1).choice(len(b.users), 12, replace=False):
        user = str(corpus.user_ids[b.users[row]])
        status, out = http("POST", f"{lastitem_app}/recommend", {"user_id": user, "k": 10})
        assert status == 200 and out["degraded"] == []
        assert [it["item_id"] for it in out["items"]] == corpus.item_ids[fused.ids[row]].tolist(), user
        assert [it["score"] for it in out["items"]] == pytest.approx(fused.scores[row].tolist(), abs=1e-4)
        last = corpus.histories("test", b.users[row : row + 1])[0][-1]
        assert out["query"] == {"text": None, "texts": [], "source": "none", "cached": False, "intent": None,
                                "items": [str(corpus.item_ids[last])]}  # fmt: skip


def test_an_intent_is_blended_with_the_last_item(lastitem_app):
    plain = http("POST", f"{lastitem_app}/recommend", {"history": ["50", "181"], "k": 10})[1]
    space = http("POST", f"{lastitem_app}/recommend", {"history": ["50", "181"], "k": 10,
                                                       "query": "a romantic comedy in Paris"})[1]  # fmt: skip
    assert plain["query"]["source"] == space["query"]["source"] == "none"
    assert space["query"]["intent"] == "a romantic comedy in Paris"
    ret = lambda out: [it["item_id"] for it in out["items"] if it["retrieval_rank"]]  # noqa: E731
    assert ret(space) != ret(plain)  # the retrieval branch's own list moved towards the intent


def test_bad_retrieval_weights_are_an_error_naming_them(serve_artifacts):
    from serve.config import ServeAppConfig
    from serve.state import load_fusion

    with pytest.raises(ValueError, match=r"retrieval_weights: unknown retrieval weight\(s\) \['lastitem'\]"):
        load_fusion(ServeAppConfig(**app_args(serve_artifacts, retrieval_weights={"lastitem": 1.0})))
    with pytest.raises(ValueError, match="retrieval weight llm must be a finite number >= 0, got -1.0"):
        load_fusion(ServeAppConfig(**app_args(serve_artifacts, retrieval_weights={"llm": -1.0})))
