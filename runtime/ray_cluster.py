"""Start or join a Ray cluster with settings that are safe on small machines and closed networks."""

from __future__ import annotations

import contextlib
import os
import secrets

SAFE_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",  # no usage reporting
    "HF_HUB_OFFLINE": "1",  # models come from local folders only
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S": "600",  # a stuck pipeline fails instead of hanging forever
}


def apply_safe_env() -> None:
    """The settings above, where the environment does not say otherwise, and a token for Ray's own ports.

    Ray's ports listen on every interface (Ray 2.60, even with a node IP of 127.0.0.1), so every call to
    them needs the cluster's token: Ray turns token auth on for a local cluster it starts while
    ``RAY_AUTH_MODE`` is unset (and refreshes its cached config then, which setting the variable here,
    after ``import ray``, would not). Unless ``RAY_AUTH_MODE=disabled`` or a token is given, a fresh one
    goes into this process's environment: inherited by the Ray processes it starts, nothing written under
    ~/.ray. A driver joining a cluster (``$RAY_ADDRESS``) brings that cluster's token."""
    for key, value in SAFE_ENV.items():
        os.environ.setdefault(key, value)
    tokenless = not os.environ.get("RAY_AUTH_TOKEN") and not os.environ.get("RAY_AUTH_TOKEN_PATH")
    wanted = os.environ.get("RAY_AUTH_MODE", "token") == "token"
    if wanted and tokenless and not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def init_ray(num_cpus: int | None = None, object_store_mb: int = 512, quiet: bool = True) -> None:
    """Join ``$RAY_ADDRESS`` if set, else start a local cluster; a no-op when Ray is already up."""
    apply_safe_env()
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=not quiet)
        return
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=not quiet,
        object_store_memory=object_store_mb * 1024 * 1024,
        configure_logging=quiet,
        logging_level="warning" if quiet else "info",
    )


def quiet_ray_data() -> None:
    """Ray Data's own progress output is line spam when stderr is not a terminal; we draw our own bar."""
    import logging

    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    # the memory-use advisories repeat every 30 s; replica memory is sized by the engine settings
    with contextlib.suppress(AttributeError):  # older Ray has no issue detectors
        ctx.issue_detectors_config.detectors = []
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def cluster_gpus() -> float:
    """GPUs the connected cluster has in total (0 on CPU-only machines)."""
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))
