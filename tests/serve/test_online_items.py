"""Items added and withdrawn online, on an app of two ingress and two retrieval replicas sharing the SQLite
store: an added item is recommended (through retrieval; CF does not know it) by every replica for a history
of items like it, from the answer after the addition on (replicas that start later catch up before they are
ready: ``test_rollout.py``); a withdrawn item never comes back; bad items are refused whole, with a 4xx
naming the field."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from .conftest import TOKEN, app_args, http, http_replica, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]
APP = "catalog"
PREFIX = f"/{APP}"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
READS = 40  # requests per check: spread over 2 ingress and 2 retrieval replicas
# science fiction of the packaged catalog: Alien, Star Wars, The Empire Strikes Back, Return of the Jedi
SCIFI = ["183", "50", "172", "181"]
NEW = {"item_id": "new-sw", "title": "Star Wars: Shadows of the Galactic Empire", "year": 1998,
       "genres": "Action, Adventure, Sci-Fi, War"}  # fmt: skip
BODY_LIMIT = 16_384


@pytest.fixture(scope="module")
def catalog(serve_url, serve_artifacts, tmp_path_factory):
    from ray import serve

    from serve.app import build_app

    store = {"backend": "sqlite", "path": str(tmp_path_factory.mktemp("catalog") / "state.sqlite3")}
    two = {"num_replicas": 2}
    args = app_args(serve_artifacts, store=store, events_token=TOKEN, auth="token", max_body_bytes=BODY_LIMIT,
                    timeouts={"cf": 10.0, "retrieval": 10.0},
                    deployments={"RerankDeployment": two | {"max_ongoing_requests": 4},
                                 "RetrievalDeployment": two})  # fmt: skip

    def start() -> None:
        serve.run(build_app(args), name=APP, route_prefix=PREFIX)
        wait_ready(PREFIX, timeout=300)

    start()
    yield start
    serve.delete(APP)


def recommend(body: dict) -> tuple[dict, str]:
    status, out, replica = http_replica("POST", f"{PREFIX}/recommend", body)
    assert status == 200, out
    return out, replica


def reads(body: dict) -> tuple[list[dict], set[str]]:
    """READS answers, and more (up to 5x) until both ingress replicas have answered (Serve's router is not
    uniform)."""
    answers = [recommend(body) for _ in range(READS)]
    while len({a[1] for a in answers}) < 2 and len(answers) < 5 * READS:
        answers.append(recommend(body))
    return [a[0] for a in answers], {a[1] for a in answers}


def ranked(out: dict, item_id: str) -> dict | None:
    return next((i for i in out["items"] if i["item_id"] == item_id), None)


def test_an_added_item_is_recommended_by_every_replica_from_the_next_answer(catalog):
    body = {"history": SCIFI, "k": 10}
    before, _ = recommend(body)
    assert ranked(before, NEW["item_id"]) is None

    status, out = http("POST", f"{PREFIX}/items", {"items": [NEW]}, AUTH)
    assert status == 200 and out["added"] == [NEW["item_id"]], out
    assert http("GET", f"{PREFIX}/items/{NEW['item_id']}")[1]["title"] == NEW["title"]

    # the answer right after the addition, whichever ingress and retrieval replica takes it
    answers, replicas = reads(body)
    assert len(replicas) == 2, f"only {replicas} answered {len(answers)} requests"
    got = [ranked(a, NEW["item_id"]) for a in answers]
    assert all(g is not None for g in got), "a replica does not recommend the added item"
    assert {(g["cf_rank"], g["retrieval_rank"] <= 3) for g in got} == {(None, True)}  # through retrieval only
    assert {a["degraded"] == [] for a in answers} == {True}
    # found by the search box, and usable in a history and in events
    assert (
        http("GET", f"{PREFIX}/items?q=shadows%20of%20the%20galactic")[1]["items"][0]["item_id"]
        == NEW["item_id"]
    )
    out, _ = recommend({"history": [*SCIFI, NEW["item_id"]], "k": 10})
    assert ranked(out, NEW["item_id"]) is None  # seen
    status, out = http("POST", f"{PREFIX}/users/3/events", {"item_ids": [NEW["item_id"]]}, AUTH)
    assert status == 200 and out["appended"] == 1, out
    assert http("GET", f"{PREFIX}/healthz")[1]["catalog"]["added_online"] == 1


def test_a_withdrawn_item_is_never_returned_again(catalog):
    user = {"user_id": "10", "k": 10}
    top = recommend(user)[0]["items"][0]["item_id"]  # a catalog item CF and retrieval both know
    status, out = http("DELETE", f"{PREFIX}/items/{top}", headers=AUTH)
    assert status == 200 and out["withdrawn"] is True, out
    answers, replicas = reads(user)
    assert len(replicas) == 2 and not any(ranked(a, top) for a in answers)
    assert len({len(a["items"]) for a in answers} - {10}) == 0  # the list is still full
    title = http("GET", f"{PREFIX}/items?ids={top}")[1]["items"][0]["title"]
    found = http("GET", f"{PREFIX}/items?q={quote(title[:12])}&limit=50")[1]["items"]
    assert top not in [i["item_id"] for i in found]
    assert http("GET", f"{PREFIX}/items/{top}")[0] == 404
    status, out = http("DELETE", f"{PREFIX}/items/{top}", headers=AUTH)
    assert status == 200 and out["withdrawn"] is False  # once is enough
    assert http("DELETE", f"{PREFIX}/items/no-such-item", headers=AUTH)[0] == 404


@pytest.mark.parametrize(
    ("items", "status", "field"),
    [
        ([{"item_id": "b1"}], 422, "items.0.title"),
        ([{"item_id": "b1", "title": "  "}], 422, "items.0.title"),
        ([{"item_id": "b1", "title": "X", "brand": "Acme"}], 422, "items.0.brand"),  # not a field of ML-100K
        ([{"item_id": "b1", "title": "X"}, {"item_id": "b1", "title": "Y"}], 422, "items.1.item_id"),
        ([{"item_id": "b1", "title": "X"}, {"item_id": "50", "title": "Star Wars"}], 409, "item_id"),
        ([{"item_id": "b1", "title": "X", "year": "soon"}], 422, "items.0.year"),
        ([{"item_id": "\u0000", "title": "X"}], 422, "items.0.item_id"),
        ([], 422, "items"),
    ],
)
def test_bad_items_are_refused_whole_naming_the_field(catalog, items, status, field):
    got, out = http("POST", f"{PREFIX}/items", {"items": items}, AUTH)
    assert got == status and field in str(out), out
    assert http("GET", f"{PREFIX}/items/b1")[0] == 404  # nothing of the batch was added


def test_catalog_changes_need_the_token_and_fit_the_body_limit(catalog):
    assert http("POST", f"{PREFIX}/items", {"items": [{"item_id": "t1", "title": "T"}]})[0] == 401
    assert http("DELETE", f"{PREFIX}/items/50")[0] == 401
    big = {"items": [{"item_id": f"big-{i}", "title": "x" * 400} for i in range(60)]}
    assert http("POST", f"{PREFIX}/items", big, AUTH)[0] == 413
    assert http("GET", f"{PREFIX}/items/big-0")[0] == 404
