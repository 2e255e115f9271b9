"""The ingress's counts and timings as Prometheus metrics, through Serve's metric classes: Ray's metrics agent
on each node exports them on its metrics port (``ray.nodes()[i]["MetricsExportPort"]``, ``/metrics``), tagged
with the deployment, replica and application, about every 10 s.

- ``ray_q2rec_count_total{kind=…}``: what ``/healthz`` shows under ``counts``: answers (``recommend``),
  events (``events``, ``events_repeated``, ``events_dropped``), degraded answers by what was missing
  (``degraded_cf``, ``degraded_retrieval``, ``degraded_llm``, ``degraded_store``), branch calls that timed
  out or failed (``cf_timeout``, ``cf_error``, ``retrieval_timeout``, ``retrieval_error``), the query each answer used (``query_llm``, ``query_fallback``, ``query_none``,
  ``query_cached``), generations (``generated``, ``generation_failed``, ``generation_shed``) and store
  errors (``store_failed``), items added and withdrawn online (``items_added``, ``items_withdrawn``) and
  the LLM descriptions of added items written or failed (``items_described``, ``description_failed``);
- ``ray_q2rec_gauge{kind=…}``: levels, set every 5 s: ``items_pending_enrichment``, the items added online
  whose LLM description has not landed (0 unless the app describes them: an engine and an ``enriched``
  weight), and ``generations_pending``, the user queries being written;
- ``ray_q2rec_latency_ms{stage=…}``: a histogram of each stage of ``timings_ms`` (catalog, store, cf,
  retrieval, branches, fuse, total).

``docs/monitoring/`` holds a Prometheus scrape config (Ray's own service-discovery file of every node's
metrics endpoint) and a Grafana dashboard of these series (request rate, p50/p99, degraded share, stage
latency, query sources, failures, catalog changes); ``tests/serve/test_api.py`` checks that the series it
queries are exported.
"""

from __future__ import annotations

from collections import Counter

LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000]


class MeteredCounts(Counter):
    """A ``Counter`` whose every increase is also added to the exported ``q2rec_count`` metric."""

    def __init__(self) -> None:
        super().__init__()
        from ray.serve.metrics import Counter as ServeCounter
        from ray.serve.metrics import Gauge, Histogram

        self._count = ServeCounter(
            "q2rec_count", description="q2rec ingress events by kind", tag_keys=("kind",)
        )
        self._latency = Histogram("q2rec_latency_ms", description="q2rec request stages, milliseconds",
                                  boundaries=LATENCY_BUCKETS_MS, tag_keys=("stage",))  # fmt: skip
        self._gauge = Gauge("q2rec_gauge", description="q2rec ingress state by kind", tag_keys=("kind",))

    def __setitem__(self, key: str, value: int) -> None:
        delta = value - self.get(key, 0)
        super().__setitem__(key, value)
        if delta > 0:
            self._count.inc(delta, tags={"kind": key})

    def gauge(self, kind: str, value: float) -> None:
        """Set the exported ``q2rec_gauge{kind}`` (a level, not a count)."""
        self._gauge.set(value, tags={"kind": kind})

    def timings(self, timings_ms: dict[str, float]) -> None:
        for stage, ms in timings_ms.items():
            self._latency.observe(ms, tags={"stage": stage})
