"""Train CF models as Ray tasks, and reuse trained models from the artifacts directory.

The task asks for ``num_gpus`` when the cluster has GPUs (SASRec then trains on CUDA) and otherwise runs
on CPU with ``num_cpus`` threads. It reads the split from the artifacts directory and writes the model
folder there, so only paths cross the task boundary.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from actors.cf import CFModel, ValidationSet, model_class
from data_prep.artifacts import ArtifactPaths, read_json
from data_prep.corpus import Corpus

log = logging.getLogger(__name__)


def build_config(model: str, overrides: dict[str, Any] | None = None) -> Any:
    """The model's config dataclass with ``overrides`` applied; unknown fields are an error."""
    cls = model_class(model)
    known = {f.name: f for f in fields(cls.Config)}
    bad = sorted(set(overrides or {}) - set(known))
    if bad:
        raise ValueError(f"{model}: unknown config field(s) {bad}; known: {sorted(known)}")
    return cls.Config(**(overrides or {}))


def training_fingerprint(paths: ArtifactPaths, model: str, config: Any) -> str:
    """Hash of the prepared data's manifest and the model config: a saved model is reused only if it matches."""
    cfg = {k: v for k, v in asdict(config).items() if k not in ("progress", "threads")}
    payload = json.dumps([read_json(paths.prepare_manifest), model, cfg], sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def fit_and_save(root: str, model: str, config: Any, fingerprint: str) -> dict[str, Any]:
    """Fit ``model`` on the training split with validation-based selection, save it; returns fit info."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # epoch lines reach the driver's log
    paths = ArtifactPaths(Path(root))
    corpus = Corpus.load(paths)
    users = corpus.eval_users("valid")
    valid = ValidationSet(corpus.histories("valid", users), corpus.valid_target[users])
    cf = model_class(model)(config).fit(corpus.train_seqs, corpus.n_items, valid)
    cf.fit_info["fingerprint"] = fingerprint
    cf.save(paths.model_dir(model))
    return cf.fit_info


def train_or_load(
    paths: ArtifactPaths,
    model: str,
    overrides: dict[str, Any] | None = None,
    num_cpus: float = 1,
    num_gpus: float | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> CFModel:
    """The trained model: loaded from disk when its fingerprint matches, else trained in a Ray task.

    ``num_gpus=None`` asks for one GPU when the cluster has any, none otherwise. With ``show_progress``
    the task's per-epoch log lines are forwarded to this process (when this call starts Ray).
    """
    import ray

    from data_prep.ray_cluster import cluster_gpus, init_ray

    config = build_config(model, overrides)
    fingerprint = training_fingerprint(paths, model, config)
    folder = paths.model_dir(model)
    if not force and (folder / "config.json").is_file():
        saved = json.loads((folder / "config.json").read_text())
        if saved.get("fit_info", {}).get("fingerprint") == fingerprint:
            log.info("%s: reusing trained model in %s", model, folder)
            return model_class(model).load(folder)
    init_ray(quiet=not show_progress)
    gpus = (1.0 if cluster_gpus() >= 1 else 0.0) if num_gpus is None else num_gpus
    if hasattr(config, "threads") and not config.threads:
        config.threads = max(int(num_cpus), 1)
    if hasattr(config, "progress"):
        config.progress = False  # a bar cannot cross the process boundary; the task logs each epoch
    task = ray.remote(fit_and_save).options(
        num_cpus=num_cpus,
        num_gpus=gpus,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(int(num_cpus), 1))}},
        name=f"train-{model}",
    )
    log.info("%s: training as a Ray task (num_cpus=%s, num_gpus=%s)", model, num_cpus, gpus)
    ray.get(task.remote(str(paths.root.resolve()), model, config, fingerprint))
    return model_class(model).load(folder)
