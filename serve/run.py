"""Start the Serve application locally: ``python -m serve.run`` (what ``make serve`` does).

    python -m serve.run [--config serve/serve_config.yaml] [--artifacts DIR] [--engine auto|vllm|transformers|none]
                        [--host 127.0.0.1] [--port 8000]

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

    from data_prep.ray_cluster import init_ray
    from serve.app import build_app

    init_ray(quiet=True)
    http = {"host": host, "port": port}
    if request_timeout_s is not None:
        http["request_timeout_s"] = request_timeout_s
    serve.start(http_options=http)
    serve.run(app if app is not None else build_app(args), name=name, route_prefix="/")
    return f"http://{host}:{port}"


def parse(argv: list[str] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="python -m serve.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    ap.add_argument("--artifacts", help="one dataset's artifacts directory (default from the config)")
    ap.add_argument("--engine", choices=["auto", "vllm", "transformers", "openai", "none"])
    ap.add_argument("--host")
    ap.add_argument("--port", type=int)
    a = ap.parse_args(argv)
    args, http = read_config(a.config)
    if a.artifacts:
        args["artifacts"] = a.artifacts
    if a.engine:
        args["engine"] = {**args.get("engine", {}), "backend": a.engine}
    http = {
        **http,
        "host": a.host or http.get("host", "127.0.0.1"),
        "port": a.port or int(http.get("port", 8000)),
    }
    return args, http


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    from serve.config import ServeAppConfig

    try:
        args, http = parse(argv)
        ServeAppConfig(**args).check_auth()
    except (FileNotFoundError, ValueError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    url = start_app(args, http["host"], http["port"], request_timeout_s=http.get("request_timeout_s"))
    print(f"q2rec is serving on {url} (API docs: {url}/docs). Ctrl-C stops it.", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        from ray import serve

        serve.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
