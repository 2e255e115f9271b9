"""One Serve instance per session on the session Ray cluster; apps are added under their own route prefix.

The main app serves the packaged ML-100K with EASE, metadata-built queries (``engine: none``) and a
fusion.json written here; tests that need the LLM, faults or two replicas deploy their own app beside it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

PORT = 8127
BASE = f"http://127.0.0.1:{PORT}"
TOKEN = "test-token"
FUSION = {"method": "adaptive", "norm": "zscore", "n": 100, "a": 0.4, "b": 0.5, "c": 1.0, "unseen": 1.0}
WEIGHTS = {"last": 1.0, "recent": 0.3, "llm": 0.6, "enriched": 0.5}  # every query part and item side in use


def http(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None,
         timeout: float = 30.0, base: str = BASE) -> tuple[int, Any]:  # fmt: skip
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        payload = e.read()
        try:
            return e.code, json.loads(payload or b"null")
        except json.JSONDecodeError:
            return e.code, payload.decode(errors="replace")


def http_replica(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                 timeout: float = 30.0) -> tuple[int, Any, str]:  # fmt: skip
    """``http`` plus the ``x-q2rec-replica`` header: which ingress replica answered."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null"), r.headers.get("x-q2rec-replica", "")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), e.headers.get("x-q2rec-replica", "")


def running(app: str) -> dict[str, list]:
    """One reading of Serve's state: each deployment of ``app`` → its RUNNING replicas' details."""
    # replica ids, actor names and pids have no public API: serve.status() stops at deployments, and
    # ray.util.state needs the dashboard, which the tests and benches run without
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ReplicaState, ServeInstanceDetails

    details = ServeInstanceDetails(**_get_global_client().get_serve_details())
    return {
        name: [r for r in d.replicas if r.state == ReplicaState.RUNNING]
        for name, d in details.applications[app].deployments.items()
    }


def running_replicas(app: str, deployment: str) -> dict[str, str]:
    """One reading: replica id → actor name of the deployment's RUNNING replicas."""
    return {r.replica_id: r.actor_name for r in running(app)[deployment]}


def poll(read, done, timeout: float) -> tuple[Any, float]:
    """Take readings every 0.5 s until ``done(reading)`` or the deadline; (the reading it stopped on,
    seconds waited), so the caller asserts on exactly what the loop saw."""
    t0 = time.monotonic()
    while True:
        reading = read()
        if done(reading) or time.monotonic() - t0 > timeout:
            return reading, time.monotonic() - t0
        time.sleep(0.5)


def wait_for_replacement(
    app: str, deployment: str, killed: str, n: int = 2, timeout: float = 300.0
) -> dict[str, str]:
    """The first reading with ``n`` RUNNING replicas, none of them the killed one (a replica id), or the last
    one at the deadline. The deadline is generous: on a 2-core box under load a new retrieval replica
    (encoder load, stored queries encoded) was measured to take 171 s to start."""
    reading, _ = poll(
        lambda: running_replicas(app, deployment), lambda r: len(r) == n and killed not in r, timeout
    )
    return reading


def app_args(paths, **overrides) -> dict[str, Any]:
    return {
        "artifacts": str(paths.root),
        "cf_model": "ease",
        "fusion_path": str(paths.root / "serve_fusion.json"),
        "engine": {"backend": "none"},
        "auth": "none",  # events without a token: test apps on 127.0.0.1 (the main app has a token)
        # a store of each app's own: events one test posts never reach another app's answers
        "store": {"backend": "sqlite", "path": str(paths.root / "online" / f"{uuid.uuid4().hex}.sqlite3")},
        # the ingress queues instead of shedding: on a loaded box Serve counts requests still being placed as
        # queued, so the shipped 4 + 4 shed a burst of six (shedding has its own test, in test_degraded.py)
        "deployments": {"RerankDeployment": {"max_ongoing_requests": 4}},
    } | overrides


def wait_ready(prefix: str, timeout: float = 120.0, base: str = BASE) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if http("GET", f"{prefix}/healthz", timeout=5, base=base)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{prefix}/healthz not ready after {timeout}s")


def prepare_serve_artifacts(paths):
    """EASE trained (or reused) and a fusion.json for the test apps, on the Ray cluster that is up."""
    from actors.fusion_file import FusionFile
    from training.cf import train

    train(paths, "ease", show_progress=False)
    fusion = FusionFile.model_validate(
        {"config": FUSION, "weights": WEIGHTS, "cf": "ease", "valid": {"NDCG@10": 0.0}}
    )
    fusion.save(paths.root / "serve_fusion.json")
    return paths


@pytest.fixture(scope="session")
def serve_artifacts(ray_cluster, ml100k_content):
    return prepare_serve_artifacts(ml100k_content)


@pytest.fixture(scope="session")
def serve_url(serve_artifacts):
    """The main app at ``/``: EASE + retrieval with every query part and item side, events behind a token."""
    from ray import serve

    from serve.app import build_app

    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(
        build_app(app_args(serve_artifacts, events_token=TOKEN, auth="token")), name="q2rec", route_prefix="/"
    )
    wait_ready("")
    yield BASE
    serve.shutdown()


class Load:
    """``clients`` threads, each sending one request at a time with a pause: a bounded, steady load.
    A request that fails is retried once by the client (as an HTTP client of a replicated service does)."""

    def __init__(self, prefix: str, clients: int = 3, pause: float = 0.02, base: str = BASE,
                 timeout: float = 30.0) -> None:  # fmt: skip
        self.prefix, self.base, self.timeout = prefix, base, timeout  # timeout: above the branch budgets
        self.stop = threading.Event()
        self.ok = self.failed = self.retried = 0
        self.errors: list[str] = []
        self.retried_errors: list[str] = []  # what the first try of each retried request got
        self.samples: list[tuple[float, float]] = []  # (monotonic end time, ms) of each answered request
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(pause, i)) for i in range(clients)]

    def run(self, pause: float, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            body = {"user_id": str(rng.randint(3, 943)), "k": 10}
            result, error = self.once(body)
            if result is None:
                with self.lock:
                    self.retried += 1
                    self.retried_errors.append(error)
                result, _ = self.once(body)
            with self.lock:
                if result is None:
                    self.failed += 1
                elif result["degraded"]:
                    self.failed += 1
                    self.errors.append(f"degraded {result['degraded']}")
                else:
                    self.ok += 1
            time.sleep(pause)

    def once(self, body) -> tuple[dict | None, str | None]:
        """One request: (the answer, None) or (None, what went wrong)."""
        t0 = time.monotonic()
        try:
            status, out = http("POST", f"{self.prefix}/recommend", body, timeout=self.timeout, base=self.base)
        except OSError as exc:
            self.errors.append(repr(exc))
            return None, repr(exc)
        with self.lock:
            self.samples.append((time.monotonic(), (time.monotonic() - t0) * 1000))
        if status != 200:
            self.errors.append(f"{status} {out}")
            return None, f"{status} {out}"
        return out, None

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()
