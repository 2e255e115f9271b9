"""Online state shared by two ingress replicas, on the embedded store (SQLite) and on a real Redis: an event
changes every replica's answer at once, outlives the replica that took it and a restart of the whole app,
and concurrent events lose nothing. With Redis down: 503 naming the store, recommendations from the last
known state marked degraded, and everything back once Redis is."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import app_args, http, http_replica, running_replicas, wait_for_replacement, wait_ready

pytestmark = [pytest.mark.ray, pytest.mark.slow]
INGRESS = "RerankDeployment"
BODY_LIMIT = 8192  # not the default: the configured limit must reach the app that serves
READS = 40  # requests per check (more until both replicas answered: SharedApp.reads)
MAX_EVENTS = 50  # online items kept per user (not the default: the configured cap must reach the store)


class SharedApp:
    def __init__(self, paths, backend: str, store: dict, redis=None) -> None:
        self.name = f"shared-{backend}"
        self.prefix = f"/{self.name}"
        self.redis = redis
        store = store | {"max_events": MAX_EVENTS}
        self.args = app_args(paths, store=store, deployments={INGRESS: {"num_replicas": 2}},
                             timeouts={"cf": 10.0, "retrieval": 10.0}, max_body_bytes=BODY_LIMIT)  # fmt: skip

    def start(self) -> None:
        from ray import serve

        from serve.app import build_app

        serve.run(build_app(self.args), name=self.name, route_prefix=self.prefix)
        wait_ready(self.prefix)

    def stop(self) -> None:
        from ray import serve

        serve.delete(self.name)

    def recommend(self, user: str) -> tuple[list[str], list[str], str]:
        status, out, replica = http_replica("POST", f"{self.prefix}/recommend", {"user_id": user, "k": 10})
        assert status == 200, out
        return [i["item_id"] for i in out["items"]], out["degraded"], replica

    def post(self, user: str, items: list[str]) -> tuple[int, dict, str]:
        return http_replica("POST", f"{self.prefix}/users/{user}/events", {"item_ids": items})

    def length(self, user: str) -> int:
        status, out = http("GET", f"{self.prefix}/users/{user}?limit=1")
        assert status == 200, out
        return out["history_length"]

    def reads(self, user: str, n: int = READS) -> tuple[list[list[str]], list[list[str]], set[str]]:
        """``n`` answers, and more (up to 5n, four at a time) until both replicas have answered. Serve's router
        sends a request to the replica with the shorter queue, and one after another both queues are empty:
        CI runs sent 40, then 200, sequential requests all to one replica. Four at once queue on it, so the
        other one's queue is the shorter."""
        answers = [self.recommend(user) for _ in range(n)]
        with ThreadPoolExecutor(4) as pool:
            while len({a[2] for a in answers}) < 2 and len(answers) < 5 * n:
                answers.extend(pool.map(self.recommend, [user] * 4))
        return [a[0] for a in answers], [a[1] for a in answers], {a[2] for a in answers}


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def shared(request, serve_url, serve_artifacts, tmp_path_factory):
    from devtools.redis_server import RedisServer

    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("store") / "state.sqlite3"
        app = SharedApp(serve_artifacts, "sqlite", {"backend": "sqlite", "path": str(path)})
    else:
        redis = RedisServer(tmp_path_factory.mktemp("redis-shared")).start()
        app = SharedApp(serve_artifacts, "redis", {"backend": "redis", "url": redis.url}, redis)
    app.start()
    yield app
    app.stop()
    if app.redis is not None:
        app.redis.stop()


def test_an_event_reaches_every_replica_and_outlives_replica_and_app(shared):
    import ray

    user = "5"
    base = shared.length(user)
    seen = shared.recommend(user)[0][0]
    status, out, took = shared.post(user, [seen])
    assert status == 200 and out["history_length"] == base + 1, out

    lists, degraded, replicas = shared.reads(user)
    assert len(replicas) == 2, f"only {replicas} answered {len(lists)} requests"
    assert not any(seen in ids for ids in lists), "a replica still recommends the item posted as seen"
    assert degraded == [[]] * len(lists)
    assert {shared.length(user) for _ in range(10)} == {base + 1}

    # kill the replica that took the event: the survivor and the replacement both know it
    before = running_replicas(shared.name, INGRESS)
    assert took in before, (took, before)
    ray.kill(ray.get_actor(before[took], namespace="serve"), no_restart=True)
    after = wait_for_replacement(shared.name, INGRESS, took)
    assert len(after) == 2 and took not in after, after
    lists, _, replicas = shared.reads(user)
    assert replicas == set(after), (replicas, after)
    assert not any(seen in ids for ids in lists)

    # the whole app, restarted: still there
    shared.stop()
    shared.start()
    assert shared.length(user) == base + 1
    lists, _, replicas = shared.reads(user)
    assert len(replicas) == 2 and not any(seen in ids for ids in lists)


def test_concurrent_events_for_one_user_lose_nothing_and_keep_each_clients_order(shared):
    user = f"new-{uuid.uuid4().hex[:8]}"
    clients, per_client = 4, 10
    sent = {c: [str(1 + c * per_client + j) for j in range(per_client)] for c in range(clients)}
    failures: list = []

    def client(c: int) -> None:
        for item in sent[c]:
            status, out, _ = shared.post(user, [item])
            if status != 200:
                failures.append((c, item, status, out))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    status, out = http("GET", f"{shared.prefix}/users/{user}?limit=200")
    assert status == 200 and out["history_length"] == clients * per_client, out
    got = [i["item_id"] for i in out["recent"]]
    assert sorted(got) == sorted(i for items in sent.values() for i in items)
    for c, items in sent.items():
        assert [i for i in got if i in set(items)] == items, f"client {c}'s events out of order"


def test_a_retried_batch_is_stored_once_whichever_replica_takes_it(shared):
    """Sixteen copies of one batch at once, with one event id, spread over both replicas (a client retrying
    through a load balancer): one is stored, every answer is the first one's, marked duplicate but one."""
    from concurrent.futures import ThreadPoolExecutor

    user = f"idem-{uuid.uuid4().hex[:8]}"
    body = {"item_ids": ["50", "172"], "event_id": "order-1"}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: http_replica("POST", f"{shared.prefix}/users/{user}/events", body),
                                range(16)))  # fmt: skip
    assert {a[0] for a in answers} == {200}, answers[:3]
    outs = [a[1] for a in answers]
    assert sorted(o["duplicate"] for o in outs) == [False] + [True] * 15
    assert {(o["appended"], o["history_length"], o["created"]) for o in outs} == {(2, 2, True)}
    print(f"\nrepeats answered by {len({a[2] for a in answers})} replica(s)")
    assert shared.length(user) == 2
    # the header form, and a repeat after another batch: still the first answer
    status, out = http("POST", f"{shared.prefix}/users/{user}/events", {"item_ids": ["1"]},
                       {"Idempotency-Key": "order-2"})  # fmt: skip
    assert status == 200 and not out["duplicate"] and out["history_length"] == 3
    status, out = http("POST", f"{shared.prefix}/users/{user}/events", body)
    assert status == 200 and out["duplicate"] and out["history_length"] == 2  # as answered the first time
    assert shared.length(user) == 3
    status, out = http("POST", f"{shared.prefix}/users/{user}/events", body, {"Idempotency-Key": "other"})
    assert status == 422 and "event_id" in str(out)


def test_a_heavy_user_keeps_only_the_newest_items(shared):
    user = "7"
    base = shared.length(user)
    items = [str(i) for i in range(1, 1001)]
    status, out, _ = shared.post(user, items[:40])
    assert status == 200 and out["dropped"] == 0 and out["history_length"] == base + 40
    status, out, _ = shared.post(user, items[40:1000])
    assert status == 200 and out["dropped"] == 1000 - MAX_EVENTS, out
    assert out["history_length"] == base + MAX_EVENTS == shared.length(user)
    status, got = http("GET", f"{shared.prefix}/users/{user}?limit={MAX_EVENTS}")
    assert [i["item_id"] for i in got["recent"]] == items[-MAX_EVENTS:]  # the oldest were dropped


@pytest.mark.parametrize(
    "shared", ["redis"], indirect=True
)  # SQLite is a file of this host: no server to lose
def test_redis_down_gives_503_naming_it_and_serves_the_last_known_state(shared):
    user = "6"
    base = shared.length(user)
    seen = shared.recommend(user)[0][0]
    assert shared.post(user, [seen])[0] == 200
    _, _, replicas = shared.reads(user)  # both replicas read the event once
    assert len(replicas) == 2

    shared.redis.stop()
    try:
        status, out, _ = shared.post(user, ["1"])
        assert status == 503 and out["detail"]["store"] == shared.redis.url, out
        assert http("GET", f"{shared.prefix}/users/{user}")[0] == 503
        lists, degraded, replicas = shared.reads(user)
        assert len(replicas) == 2
        assert degraded == [["store"]] * len(lists)
        assert not any(seen in ids for ids in lists), "the last known state lost the event"
        health = http("GET", f"{shared.prefix}/healthz")[1]
        assert health["status"] == "degraded" and health["store"]["answering"] is False, health
    finally:
        shared.redis.start()
    assert shared.length(user) == base + 1
    lists, degraded, _ = shared.reads(user)
    assert degraded == [[]] * len(lists) and not any(seen in ids for ids in lists)


def test_bad_events_are_4xx_and_change_nothing(shared):
    user = "7"
    base = shared.length(user)
    status, out, _ = shared.post(user, ["1", "no-such-item", "also-not"])
    assert status == 422 and out["detail"]["unknown_item_ids"] == ["no-such-item", "also-not"], out
    status, out, _ = shared.post(user, ["1"] * 1001)  # over 1,000 items, inside the byte limit
    assert status == 422 and out["detail"][0]["loc"] == ["body", "item_ids"], out
    status, out, _ = shared.post(user, ["9" * 20] * 500)  # 500 items, a body over this app's 8 KiB limit
    assert status == 413 and f"over the limit of {BODY_LIMIT}" in out["detail"], out
    assert shared.length(user) == base
