"""The training stage: fit CF models as Ray tasks and save them under ``models/<name>``.

    q2rec train --dataset ml-100k --models ease,sasrec [--set sasrec.epochs=20] [--force]

A task asks for ``num_gpus`` when the cluster has GPUs (SASRec then trains on CUDA) and otherwise runs on
CPU with ``num_cpus`` threads. It reads the split from the artifacts directory and writes the model folder
there, so only paths cross the task boundary. A saved model is reused while its fingerprint (the prepared
data and the config) matches. Evaluation, search, report and Serve only ``load_trained``: none of them
trains a model as a side effect.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

from actors.cf import CFModel, ValidationSet, model_class
from actors.cf.overrides import add_set_argument, parse_overrides
from data_prep.artifacts import ArtifactPaths, fingerprint, read_json
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


class ModelNotTrained(FileNotFoundError):
    """No saved model, or one trained on other data or with another config."""


def training_fingerprint(paths: ArtifactPaths, model: str, config: Any) -> str:
    """Hash of the prepared data's manifest and the model config: a saved model is reused only if it matches."""
    runtime = model_class(model).RUNTIME_FIELDS
    cfg = {k: v for k, v in asdict(config).items() if k not in runtime}
    return fingerprint([read_json(paths.prepare_manifest), model, cfg])


def fit_and_save(root: str, model: str, config: Any, key: str) -> dict[str, Any]:
    """Fit ``model`` on the training split with validation-based selection, save it; returns fit info."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # epoch lines reach the driver's log
    paths = ArtifactPaths(Path(root))
    corpus = Corpus.load(paths)
    users = corpus.eval_users("valid")
    valid = ValidationSet(corpus.histories("valid", users), corpus.valid_target[users])
    cf = model_class(model)(config).fit(corpus.train_seqs, corpus.n_items, valid)
    cf.fit_info["fingerprint"] = key
    _build_index(cf, valid.histories)
    cf.save(paths.model_dir(model))
    return cf.fit_info


def _build_index(cf: CFModel, queries) -> None:
    """The item index the model's config asks for (``CFModel.build_index``), its recall measured on
    ``queries`` (validation histories), logged."""
    if cf.wanted_index() is None:
        cf.build_index()  # drops any index: exact ranking
        return
    log.info("%s: building its %s item index over %d items", cf.name, cf.wanted_index().kind, cf.n_items)
    info = cf.build_index(queries).build_info
    log.info("%s: item index built in %.1f s, recall@10 against exact ranking %.4f (%d validation users)",
             cf.name, info["build_s"], info["recall_at_10"], info["recall_queries"])  # fmt: skip


def update_index(paths: ArtifactPaths, cf: CFModel) -> CFModel:
    """A saved model whose item index is not the one its config asks for (a model trained before the index
    existed, or ``--set sasrec.index=...``): the index built (or dropped) and saved beside the weights."""
    if cf.index_is_current():
        return cf
    corpus = Corpus.load(paths)
    users = corpus.eval_users("valid")
    _build_index(cf, corpus.histories("valid", users))
    cf.save_index(paths.model_dir(cf.name))
    return cf


def _saved_fingerprint(folder: Path) -> str | None:
    if not (folder / "config.json").is_file():
        return None
    return read_json(folder / "config.json").get("fit_info", {}).get("fingerprint")


def with_runtime_fields(cf: CFModel, config: Any) -> CFModel:
    """``cf`` with ``config``'s runtime fields (how it runs, not what it learnt: threads, its item index)."""
    cf.config = replace(cf.config, **{k: getattr(config, k) for k in cf.RUNTIME_FIELDS})
    return cf


def load_trained(paths: ArtifactPaths, model: str, overrides: dict[str, Any] | None = None) -> CFModel:
    """The saved model trained on this data with this config (``overrides`` applied), or a clear error."""
    config = build_config(model, overrides)
    folder = paths.model_dir(model)
    saved = _saved_fingerprint(folder)
    sets = " ".join(f"--set {model}.{k}={v!r}" for k, v in (overrides or {}).items())
    retrain = f"q2rec train --dataset {paths.root.name} --models {model} {sets}".strip()
    if saved is None:
        raise ModelNotTrained(f"{folder}: no trained {model}; run `{retrain}` first")
    if saved != training_fingerprint(paths, model, config):
        raise ModelNotTrained(
            f"{folder}: the saved {model} was trained on other data or with another config; run `{retrain}`"
        )
    cf = with_runtime_fields(model_class(model).load(folder), config)
    if not cf.index_is_current():
        want = cf.wanted_index()
        raise ModelNotTrained(f"{folder}: the saved {model}'s item index is not the one its config asks for "
                              f"({want.kind if want else 'none: exact'}); run `{retrain}`")  # fmt: skip
    return cf


def train(
    paths: ArtifactPaths,
    model: str,
    overrides: dict[str, Any] | None = None,
    num_cpus: float = 1,
    num_gpus: float | None = None,
    force: bool = False,
    show_progress: bool = True,
) -> CFModel:
    """Fit ``model`` in a Ray task and save it, unless a saved one matches (data and config) and not ``force``.

    ``num_gpus=None`` asks for one GPU when the cluster has any, none otherwise. With ``show_progress``
    the task's per-epoch log lines are forwarded to this process (when this call starts Ray).
    """
    import ray

    from runtime.ray_cluster import cluster_gpus, init_ray

    config = build_config(model, overrides)
    key = training_fingerprint(paths, model, config)
    folder = paths.model_dir(model)
    if not force and _saved_fingerprint(folder) == key:
        log.info("%s: reusing trained model in %s", model, folder)
        return update_index(paths, with_runtime_fields(model_class(model).load(folder), config))
    manifest = read_json(paths.prepare_manifest)
    model_class(model)(config).check_fits(int(manifest["users"]), int(manifest["items"]))  # before any work
    init_ray(quiet=not show_progress)
    gpus = (1.0 if cluster_gpus() >= 1 else 0.0) if num_gpus is None else num_gpus
    config = model_class(model).for_remote_fit(config, num_cpus)
    task = ray.remote(fit_and_save).options(
        num_cpus=num_cpus,
        num_gpus=gpus,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(max(int(num_cpus), 1))}},
        name=f"train-{model}",
    )
    log.info("%s: training as a Ray task (num_cpus=%s, num_gpus=%s)", model, num_cpus, gpus)
    ray.get(task.remote(str(paths.root.resolve()), model, config, key))
    return model_class(model).load(folder)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    from actors.cf import MODELS

    ap.add_argument("--models", default="pop,ease,sasrec", help="comma-separated: " + ",".join(MODELS))
    add_set_argument(ap)
    ap.add_argument("--num-cpus", type=float, default=2, help="CPUs (and threads) for each training task")
    ap.add_argument(
        "--num-gpus", type=float, default=None, help="GPUs per task (default: 1 if the cluster has any)"
    )
    ap.add_argument("--force", action="store_true", help="retrain even if a matching model is saved")


def command(args: argparse.Namespace) -> int:
    """Run the stage on parsed options; returns the exit code."""
    from actors.cf import MODELS
    from data_prep.prepare import ensure_prepared
    from data_prep.schema import DataError

    try:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = [m for m in models if m not in MODELS]
        if unknown or not models:
            raise ValueError(f"--models: unknown model(s) {unknown}; choose from {sorted(MODELS)}")
        overrides = parse_overrides(args.overrides)
        paths = ensure_prepared(args.dataset, args.artifacts)
        for name in models:
            model = train(paths, name, overrides.get(name), args.num_cpus, args.num_gpus, args.force)
            info = {k: v for k, v in model.fit_info.items() if k not in ("history", "fingerprint")}
            print(f"{name}: {paths.model_dir(name)} {json.dumps(info, default=str)[:300]}")
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
