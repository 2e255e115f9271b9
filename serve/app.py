"""The import-path application: ``serve.app:build_app``, wired with ``.bind()``.

    serve run serve/serve_config.yaml          # or: serve deploy, or python -m serve.run

``build_app(args)`` takes the ``args`` of ``serve_config.yaml`` (validated by ``ServeAppConfig``) and gives
each deployment its replicas, CPUs/GPUs, ``max_ongoing_requests`` and autoscaling from the same config.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from serve.api import RerankDeployment
from serve.config import ServeAppConfig
from serve.deployments import CFDeployment, QueryDeployment, RetrievalDeployment


def build_app(args: dict[str, Any] | None = None) -> Application:
    cfg = ServeAppConfig(**(args or {}))
    cfg.check_auth()
    config = cfg.model_dump()
    opts = {name: d.options() for name, d in cfg.deployments.items()}
    query = QueryDeployment.options(**opts["QueryDeployment"]).bind(config)
    retrieval = RetrievalDeployment.options(**opts["RetrievalDeployment"]).bind(config)
    cf = CFDeployment.options(**opts["CFDeployment"]).bind(config)
    return RerankDeployment.options(**opts["RerankDeployment"]).bind(config, query, retrieval, cf)
