"""Sizing a cluster: predicted wall time of the LLM batch jobs and replica counts for a request rate.

    python scripts/capacity.py --items 1000000 --users 100000 --gpus 8 [--rps 200] [--queries-per-user 1]

Three kinds of input, kept apart (the README's "Sizing a cluster" gives their sources):
- measured here (``make demo``'s report and ``bench/scale.py``'s LLM sample): tokens per item of
  enrichment and per user query with the project's prompts, Ray Data's efficiency against the bare engine;
- cited: an LLM's generated tokens per second on one GPU with vLLM (``--gpu-tokens-per-s``), from a
  published benchmark (default: Llama-3.1-8B on one H100; see the README);
- estimated: the per-request time of each Serve deployment (``bench/serve_latency.py`` measures your own).

Enrichment takes items x completion tokens per item / (GPUs x tokens per second x efficiency); batch
queries the same per user and query. A deployment needs rps x seconds per request / utilisation replicas
(one CPU each, as measured). Every figure is a flag, so a measurement on your own hardware replaces it.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    items: int
    users: int
    gpus: int
    rps: float
    queries_per_user: int  # LLM queries written per user (one per history in production)
    events_per_s: float = 0.0  # histories that change per second online: each gets a new LLM query


@dataclass(frozen=True)
class Rates:
    completion_tokens_per_item: float  # measured here
    completion_tokens_per_query: float  # measured here
    gpu_tokens_per_s: float  # cited: generated tokens per second on one GPU
    pipeline_efficiency: float  # measured here: Ray Data pipeline / bare engine
    ms_per_request: dict[str, float]  # measured here: per deployment, one request on one CPU
    utilisation: float  # target busy fraction of a replica


def llm_hours(tokens: float, w: Workload, r: Rates) -> float:
    return tokens / (w.gpus * r.gpu_tokens_per_s * r.pipeline_efficiency) / 3600


def plan(w: Workload, r: Rates) -> dict[str, object]:
    """Predicted LLM batch hours and Serve replicas for ``w`` at rates ``r``."""
    if min(w.items, w.users, w.gpus, w.queries_per_user) < 1 or w.rps <= 0 or w.events_per_s < 0:
        raise ValueError(f"every size must be positive, got {w}")
    enrich = w.items * r.completion_tokens_per_item
    queries = w.users * w.queries_per_user * r.completion_tokens_per_query
    replicas = {
        name: max(1, math.ceil(w.rps * ms / 1000 / r.utilisation)) for name, ms in r.ms_per_request.items()
    }
    online = w.events_per_s * r.completion_tokens_per_query / (r.gpu_tokens_per_s * r.utilisation)
    return {
        "query_gpus_online": math.ceil(online) if online else 0,
        "enrichment_tokens": enrich,
        "enrichment_hours": llm_hours(enrich, w, r),
        "query_tokens": queries,
        "query_hours": llm_hours(queries, w, r),
        "replicas": replicas,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python scripts/capacity.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, required=True, help="catalog size")
    ap.add_argument("--users", type=int, required=True, help="users whose query the batch job writes")
    ap.add_argument("--gpus", type=int, default=1, help="GPUs running vLLM engine replicas (one each)")
    ap.add_argument("--rps", type=float, default=100.0, help="recommend requests per second to serve")
    ap.add_argument("--events-per-s", type=float, default=0.0,
                    help="histories changing per second online (each gets a new LLM query)")  # fmt: skip
    ap.add_argument("--queries-per-user", type=int, default=1,
                    help="LLM queries per user (2 for the offline evaluation: valid and test)")  # fmt: skip
    ap.add_argument("--completion-tokens-per-item", type=float, default=39.8,
                    help="measured here: ML-100K enrichment, packaged model")  # fmt: skip
    ap.add_argument("--completion-tokens-per-query", type=float, default=35.4,
                    help="measured here: ML-100K user queries, packaged model")  # fmt: skip
    ap.add_argument("--gpu-tokens-per-s", type=float, default=5777.0,
                    help="cited: Llama-3.1-8B (FP8) on one H100 with vLLM, MLPerf Inference v5.1 offline")  # fmt: skip
    ap.add_argument("--pipeline-efficiency", type=float, default=0.85, help="measured here (Ray Data / bare)")
    ap.add_argument(
        "--cf-ms", type=float, default=10.0, help="estimate: SASRec, per request (see the README)"
    )
    ap.add_argument("--retrieval-ms", type=float, default=5.0, help="estimate: retrieval, per request")
    ap.add_argument("--ingress-ms", type=float, default=5.0, help="estimate: HTTP, fan-out and fusion")
    ap.add_argument("--utilisation", type=float, default=0.6, help="target busy fraction of a replica")
    a = ap.parse_args(argv)
    w = Workload(a.items, a.users, a.gpus, a.rps, a.queries_per_user, a.events_per_s)
    r = Rates(a.completion_tokens_per_item, a.completion_tokens_per_query, a.gpu_tokens_per_s,
              a.pipeline_efficiency, {"CFDeployment": a.cf_ms, "RetrievalDeployment": a.retrieval_ms,
                                      "RerankDeployment": a.ingress_ms}, a.utilisation)  # fmt: skip
    try:
        out = plan(w, r)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"| job | work | {a.gpus} GPU(s) |\n|---|---:|---:|")
    print(f"| enrichment | {a.items:,} items, {out['enrichment_tokens']:,.0f} tokens | "
          f"{out['enrichment_hours']:.2f} h |")  # fmt: skip
    print(f"| user queries | {a.users:,} users x {a.queries_per_user}, {out['query_tokens']:,.0f} tokens | "
          f"{out['query_hours']:.2f} h |")  # fmt: skip
    print(f"\n| deployment | replicas (1 CPU each) at {a.rps:g} req/s |\n|---|---:|")
    for name, n in out["replicas"].items():
        print(f"| {name} | {n} |")
    print(
        f"| QueryDeployment | {out['query_gpus_online']} GPU(s) for {a.events_per_s:g} changed histories/s |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
