"""Start the Serve application locally: ``q2rec serve`` (what ``make serve`` does).

    q2rec serve [--dataset ml-100k] [--artifacts DIR] [--config serve/serve_config.yaml]
                [--engine auto|vllm|transformers|openai|none] [--host 127.0.0.1] [--port 8000]

Settings come from the Serve config file's application ``args`` and ``http_options``; flags override them.
The server binds 127.0.0.1 unless told otherwise. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml

DEFAULT_CONFIG = Path(__file__).with_name("serve_config.yaml")


def read_config(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(application args, http options) of the first application in a Serve config file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Serve config not found")
    doc = yaml.safe_load(path.read_text()) or {}
    apps = doc.get("applications") or []
    if not apps:
        raise ValueError(f"{path}: no applications")
    return dict(apps[0].get("args") or {}), dict(doc.get("http_options") or {})


def start_app(args: dict[str, Any], host: str = "127.0.0.1", port: int = 8000, app=None,
              name: str = "q2rec", request_timeout_s: float | None = None) -> str:  # fmt: skip
    """Start (or join) Ray, start Serve's HTTP proxy on host:port and deploy; returns the base URL.
    ``request_timeout_s``: the proxy answers a request still unanswered after this long with an error."""
    from ray import serve

    from runtime.ray_cluster import init_ray
    from serve.app import build_app

    init_ray(quiet=True)
    http = {"host": host, "port": port}
    if request_timeout_s is not None:
        http["request_timeout_s"] = request_timeout_s
    serve.start(http_options=http)
    serve.run(app if app is not None else build_app(args), name=name, route_prefix="/")
    return f"http://{host}:{port}"


def app_args(config: Path, dataset: str | None = None, artifacts: str | None = None,
             engine: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The application args of the Serve config file ``config``; where ``dataset`` or ``artifacts`` (the
    artifacts root) is given, the app serves that dataset's artifacts instead of the config's; ``engine``
    overrides the LLM backend."""
    from data_prep.artifacts import ArtifactPaths

    args, _ = read_config(config)
    if dataset or artifacts:  # by default the dataset the config serves, under the artifacts root given
        name = Path(dataset or args.get("artifacts") or "ml-100k").name
        args["artifacts"] = str(ArtifactPaths.for_dataset(name, artifacts).root)
    if engine:
        args["engine"] = {**args.get("engine", {}), "backend": engine}
    return args


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """This stage's options (the global --artifacts, --dataset, -v/-q come from the q2rec command)."""
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG,
                    help="Serve config file (default: the packaged one-machine profile)")  # fmt: skip
    ap.add_argument("--engine", choices=["auto", "vllm", "transformers", "openai", "none"])
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)


def command(a: argparse.Namespace) -> int:
    """Serve until Ctrl-C; returns the exit code."""
    from pydantic import ValidationError

    from serve.config import ServeAppConfig

    try:
        args = app_args(a.config, a.dataset, a.artifacts, a.engine)
        _, http = read_config(a.config)
        ServeAppConfig(**args).check_auth()
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = a.host or http.get("host", "127.0.0.1"), a.port or int(http.get("port", 8000))
    url = start_app(args, host, port, request_timeout_s=http.get("request_timeout_s"))
    print(
        f"q2rec is serving {args['artifacts']} on {url} (API docs: {url}/docs). Ctrl-C stops it.", flush=True
    )
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0
