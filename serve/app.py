"""The import-path application: ``serve.app:build_app``, wired with ``.bind()``.

    serve run serve/serve_config.yaml          # or: serve deploy, or q2rec serve

``build_app(args)`` takes the ``args`` of ``serve_config.yaml`` (validated by ``ServeAppConfig``) and gives
each deployment its replicas, CPUs/GPUs, ``max_ongoing_requests`` and autoscaling from the same config.
``build_split(args, refs)`` and ``build_branch(args, name)`` are the same app cut in three for
``serve.rollout``: the ingress and the query writer, calling the CF and retrieval deployments each deployed
as an application of its own (``BranchRef``), so a new build's branches can start beside the old ones.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve.api import RerankDeployment
from serve.config import ServeAppConfig
from serve.deployments import BranchRef, CFDeployment, QueryDeployment, RetrievalDeployment

BRANCH_CLASSES = {"RetrievalDeployment": RetrievalDeployment, "CFDeployment": CFDeployment}


def _branch(cfg: ServeAppConfig, name: str) -> Application:
    return BRANCH_CLASSES[name].options(**cfg.deployments[name].options()).bind(cfg.model_dump())


def _ingress(cfg: ServeAppConfig, retrieval: Any, cf: Any) -> Application:
    """The ingress and the query writer, calling ``retrieval`` and ``cf`` (bound, or ``BranchRef``)."""
    cfg.check_auth()
    config = cfg.model_dump()
    opts = {name: d.options() for name, d in cfg.deployments.items()}
    query = QueryDeployment.options(**opts["QueryDeployment"]).bind(config)
    return RerankDeployment.options(**opts["RerankDeployment"]).bind(config, query, retrieval, cf)


def build_app(args: dict[str, Any] | None = None) -> Application:
    cfg = ServeAppConfig(**(args or {}))
    return _ingress(cfg, _branch(cfg, "RetrievalDeployment"), _branch(cfg, "CFDeployment"))


def build_branch(args: dict[str, Any], name: str) -> Application:
    """One branch deployment (``RetrievalDeployment`` or ``CFDeployment``) of ``args``, as an application."""
    return _branch(ServeAppConfig(**args), name)


def build_split(args: dict[str, Any], retrieval: BranchRef, cf: BranchRef) -> Application:
    """The ingress and the query writer of ``args``, calling the branch applications ``retrieval`` and ``cf``."""
    return _ingress(ServeAppConfig(**args), retrieval, cf)
