"""The deployment configs pass Serve's and Ray's own schemas offline, and agree with each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from serve.config import ServeAppConfig

SERVE = Path(__file__).parents[2] / "serve"


def load(name: str) -> dict:
    return yaml.safe_load((SERVE / name).read_text())


def test_serve_config_passes_serves_schema_and_ours():
    from ray.serve.schema import ServeDeploySchema

    doc = load("serve_config.yaml")
    schema = ServeDeploySchema.model_validate(doc)
    app = schema.applications[0]
    assert app.import_path == "serve.app:build_app" and schema.http_options.host == "127.0.0.1"
    cfg = ServeAppConfig(**app.args)
    assert set(cfg.deployments) == {
        "QueryDeployment",
        "RetrievalDeployment",
        "CFDeployment",
        "RerankDeployment",
    }
    assert all(d.num_cpus == 0 for d in cfg.deployments.values())  # a 2-core box must fit all four


def graph(args: dict) -> dict[str, tuple]:
    """The application graph ``build_app`` makes from Serve config args: each deployment's class and what
    it is bound to (the ingress's branches by name)."""
    from serve.app import build_app

    ingress = build_app(args)._bound_deployment  # Ray keeps the bound graph private
    out = {
        ingress.name: (
            ingress.func_or_class.__name__,
            tuple(a._bound_deployment.name for a in ingress.init_args[1:]),
        )
    }
    for a in ingress.init_args[1:]:
        out[a._bound_deployment.name] = (a._bound_deployment.func_or_class.__name__, ())
    return out


def test_both_profiles_build_the_same_graph_and_pass_serves_schema(monkeypatch):
    from ray.serve.schema import ServeDeploySchema

    monkeypatch.setenv("Q2REC_EVENTS_TOKEN", "t")  # the cluster profile's writes need it (auth: token)

    laptop, cluster = (
        ServeDeploySchema.model_validate(load(f)) for f in ("serve_config.yaml", "serve_config.cluster.yaml")
    )
    (lapp,), (capp,) = laptop.applications, cluster.applications
    assert lapp.import_path == capp.import_path == "serve.app:build_app"
    assert graph(lapp.args) == graph(capp.args)
    assert set(graph(capp.args)) == {
        "RerankDeployment",
        "QueryDeployment",
        "RetrievalDeployment",
        "CFDeployment",
    }


def test_the_cluster_profile_asks_for_real_resources():
    cfg = ServeAppConfig(**load("serve_config.cluster.yaml")["applications"][0]["args"])
    d = cfg.deployments
    assert cfg.engine.backend == "vllm"
    assert (
        d["QueryDeployment"].num_gpus >= 1 and d["QueryDeployment"].num_cpus >= 1
    )  # the LLM on a GPU worker
    for name in ("RetrievalDeployment", "CFDeployment"):
        assert d[name].num_cpus >= 1 and d[name].memory and d[name].num_replicas >= 2, name
    auto = d["RerankDeployment"].autoscaling_config
    assert auto and 2 <= auto["min_replicas"] < auto["max_replicas"]
    opts = d["CFDeployment"].options()["ray_actor_options"]
    assert opts["memory"] == d["CFDeployment"].memory and opts["num_cpus"] == 2
    # replicas on many nodes share one online store: Redis, not a file of one node
    assert cfg.store.backend == "redis" and cfg.store.url.startswith("redis://")
    laptop = ServeAppConfig(**load("serve_config.yaml")["applications"][0]["args"])
    assert laptop.store.backend == "sqlite"


def test_rayservice_holds_the_cluster_profile():
    doc = load("rayservice.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayService"
    assert yaml.safe_load(doc["spec"]["serveConfigV2"]) == load("serve_config.cluster.yaml")
    groups = {g["groupName"]: g for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
    gpu = groups["gpu-workers"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and "cpu-workers" in groups


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({"timeouts": {"cf": -1}}, "timeouts.cf"),
        ({"deployments": {"CfDeployment": {}}}, "CfDeployment"),
        ({"engine": {"backend": "llama"}}, "engine.backend"),
        ({"artifact": "x"}, "artifact"),
    ],
)
def test_bad_app_args_name_the_field(args, needle):
    with pytest.raises(ValidationError) as err:
        ServeAppConfig(**args)
    assert needle in str(err.value).replace("\n  ", ".")


def test_deployment_options_reach_serve():
    from serve.config import DeploymentOptions

    opts = DeploymentOptions(num_replicas=2, num_gpus=1, max_ongoing_requests=7).options()
    assert opts == {
        "max_ongoing_requests": 7,
        "num_replicas": 2,
        "ray_actor_options": {"num_cpus": 0.0, "num_gpus": 1.0},
    }
    spread = DeploymentOptions(num_replicas=2, max_replicas_per_node=1, memory=2**30).options()
    assert spread["max_replicas_per_node"] == 1 and spread["ray_actor_options"]["memory"] == 2**30
    auto = DeploymentOptions(autoscaling_config={"min_replicas": 1, "max_replicas": 4}).options()
    assert "num_replicas" not in auto and auto["autoscaling_config"]["max_replicas"] == 4


def test_build_app_applies_the_options():
    from serve.app import build_app

    app = build_app(
        {"auth": "none", "deployments": {"CFDeployment": {"num_replicas": 3, "max_ongoing_requests": 9}}}
    )
    ingress = app._bound_deployment  # Ray keeps the bound graph private; the init args hold the branches
    assert ingress.name == "RerankDeployment" and ingress.ray_actor_options["num_cpus"] == 0
    branches = {a._bound_deployment.name: a._bound_deployment for a in ingress.init_args[1:]}
    assert set(branches) == {"QueryDeployment", "RetrievalDeployment", "CFDeployment"}
    assert branches["CFDeployment"].num_replicas == 3 and branches["CFDeployment"].max_ongoing_requests == 9
    assert branches["QueryDeployment"].ray_actor_options["runtime_env"]["env_vars"]["OMP_NUM_THREADS"] == "2"


def test_writes_need_a_token_unless_the_config_says_auth_none(monkeypatch):
    from serve.app import build_app

    monkeypatch.delenv("Q2REC_EVENTS_TOKEN", raising=False)
    with pytest.raises(ValueError, match="auth: 'token' needs events_token or \\$Q2REC_EVENTS_TOKEN"):
        build_app({})
    build_app({"auth": "none"})
    build_app({"events_token": "secret"})
    monkeypatch.setenv("Q2REC_EVENTS_TOKEN", "from-env")
    build_app({})
    assert ServeAppConfig(**load("serve_config.cluster.yaml")["applications"][0]["args"]).auth != "none"
    assert ServeAppConfig(**load("serve_config.yaml")["applications"][0]["args"]).auth == "none"  # 127.0.0.1


def test_the_ingress_sheds_beyond_its_queue_with_retry_after():
    from serve.config import DeploymentOptions

    rerank = ServeAppConfig(auth="none").deployments["RerankDeployment"].options()
    assert rerank["max_queued_requests"] == 4 and rerank["max_ongoing_requests"] == 4
    assert (
        rerank["backpressure_config"].status_code == 503 and rerank["backpressure_config"].retry_after_s == 1
    )
    assert "max_queued_requests" not in DeploymentOptions().options()  # other deployments: Serve's default
    for name in ("serve_config.yaml", "serve_config.cluster.yaml"):
        args = load(name)["applications"][0]["args"]
        assert args["deployments"]["RerankDeployment"]["max_queued_requests"] > 0, name


def test_the_app_serves_the_dataset_named_under_the_root_given(tmp_path):
    from serve.run import DEFAULT_CONFIG, app_args, read_config

    assert app_args(DEFAULT_CONFIG)["artifacts"] == read_config(DEFAULT_CONFIG)[0]["artifacts"]
    assert app_args(DEFAULT_CONFIG, artifacts=str(tmp_path))["artifacts"] == str(tmp_path / "ml-100k")
    shop = app_args(DEFAULT_CONFIG, "data/shop", str(tmp_path), engine="none")
    assert shop["artifacts"] == str(tmp_path / "shop") and shop["engine"]["backend"] == "none"
