"""What every batch LLM job on Ray Data shares (catalog enrichment, user queries): engine settings for the
replicas, the actor-pool pipeline that writes each finished batch as a resumable part, and the outcome counts.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from actors.llm.engine import EngineConfig
from actors.llm.factory import resolve_backend
from data_prep import parts


def engine_for_replicas(
    engine: EngineConfig, gpus_per_replica: float | None = None
) -> tuple[dict[str, Any], float]:
    """(engine kwargs for the replicas, GPUs per replica). Starts Ray if needed.

    The packaged model is converted here, once, not in every replica. ``gpus_per_replica=None`` gives
    each replica ``tensor_parallel_size`` GPUs when the cluster has GPUs, none otherwise.
    """
    from runtime.ray_cluster import cluster_gpus, init_ray, quiet_ray_data

    init_ray(quiet=True)
    quiet_ray_data()
    backend = resolve_backend(engine.backend)
    kwargs = asdict(engine) | {"backend": backend}
    if kwargs["model"] is None and backend != "openai":
        from actors.llm.packaged import default_llm_dir

        kwargs["model"] = str(default_llm_dir())
    gpus = gpus_per_replica
    if gpus is None:
        has_gpu = backend != "openai" and cluster_gpus() >= 1
        gpus = float(engine.tensor_parallel_size) if has_gpu else 0.0
    return kwargs, gpus


def engine_identity(engine: EngineConfig) -> dict[str, Any]:
    """What in the engine settings changes the text it writes (part of a job's parts fingerprint)."""
    from actors.llm.packaged import LLM_DIRNAME

    backend = resolve_backend(engine.backend)
    ident = {"backend": backend, "model": engine.model or f"packaged:{LLM_DIRNAME}", "dtype": engine.dtype,
             "seed": engine.seed, "extra": engine.extra}  # fmt: skip
    if backend == "openai":
        ident["base_url"] = engine.base_url
    return ident


def run_batches(
    todo: pd.DataFrame,
    udf: type,
    udf_kwargs: dict[str, Any],
    *,
    batch_size: int,
    replicas: int,
    cpus_per_replica: float,
    gpus: float,
    folder: Path,
    columns: list[str],
    bar,
) -> list[tuple[float, int, int]]:
    """Run ``udf`` (a Ray Data callable class) over ``todo`` on an actor pool; write each finished batch as
    a part under ``folder``. Returns (arrival time, rows, completion tokens) per batch."""
    import ray

    ds = ray.data.from_pandas(parts.one_block_per_batch(todo, batch_size)).map_batches(
        udf,
        fn_constructor_kwargs=udf_kwargs,
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=replicas),
        num_cpus=cpus_per_replica if not gpus else 1,
        num_gpus=gpus,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}},
    )  # Ray Data creates pool actors with its default SPREAD strategy: one engine per node before two on one
    arrivals: list[tuple[float, int, int]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        if len(batch):
            parts.write_part(folder, batch[columns])
            arrivals.append((time.perf_counter(), len(batch), int(batch["completion_tokens"].sum())))
            bar.update(len(batch))
    return arrivals


def outcome_counts(frame: pd.DataFrame) -> dict[str, Any]:
    """How the rows came about: LLM output or fallback, retries, and why outputs were rejected."""
    return {
        "llm": int((frame["source"] == "llm").sum()),
        "fallback": int((frame["source"] == "fallback").sum()),
        "retried": int((frame["attempts"] > 1).sum()),
        "rejections_by_reason": frame.loc[frame["rejected"] != "", "rejected"].value_counts().to_dict(),
    }
