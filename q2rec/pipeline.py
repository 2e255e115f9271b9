"""``q2rec run``: every stage in order on one dataset, each skipping the work it finished before.

    q2rec run                                   # the packaged defaults: ML-100K, the packaged LLM (make demo)
    q2rec run pipeline.yaml                     # a pipeline config (every key optional; see PipelineConfig)
    q2rec run --dataset path/to/folder --no-llm # your CSV files, no LLM stage: the whole no-LLM comparison

The stages: prepare, [enrich], index, train, evaluate, [content], [queries], [llm-rerank], search, report,
targets, [smoke] (bracketed: LLM stages, left out by ``--no-llm``, and the smoke run, which needs a source
checkout). Each is the same code as its own subcommand (``q2rec STAGE``), given its options from the
config. The whole config is checked before the first stage runs: an unknown key, a value of the wrong type,
a dataset that is neither a name nor a folder, or a ``cf.set`` field the CF model does not have is an error
naming the key.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CFName = Literal["pop", "ease", "sasrec", "als"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    """What to load, and how (``q2rec prepare``'s options)."""

    name: str = "ml-100k"  # ml-100k (packaged), a prepared name, or a folder of interactions.csv + items.csv
    path: str | None = None  # a folder of the official GroupLens ML-100K or ML-1M files
    reviews: str | None = None  # Amazon reviews JSON lines (with meta)
    meta: str | None = None  # Amazon metadata JSON lines
    kcore: int = Field(0, ge=0)  # k-core filter before the split (0: off)
    cold_items: float = Field(0.0, ge=0.0, lt=1.0)  # a seeded fraction of items without training interactions


class LLMSpec(_Strict):
    """The LLM stages: catalog enrichment, user queries and the serial LLM reranker."""

    enabled: bool = True  # false (or --no-llm): no LLM stage, the report's no-LLM rows only
    engine: Literal["auto", "vllm", "transformers", "openai"] = "auto"
    model: str | None = None  # a local HF folder or hub id (default: the packaged SmolLM2-135M-Instruct)
    base_url: str = "http://127.0.0.1:8000/v1"  # for engine openai
    batch_size: int = Field(128, ge=1)  # prompts per engine call
    rerank_users: int = Field(20, ge=0)  # the serial LLM reranker's seeded user sample (0: skip that stage)
    rerank_pointwise_engine: Literal["same", "auto", "vllm", "transformers"] = "transformers"


class CFSpec(_Strict):
    """The CF models: which are trained and reported, which one the served fusion uses."""

    models: list[CFName] = Field(default_factory=lambda: ["pop", "ease", "sasrec"], min_length=1)
    backbone: CFName = "sasrec"  # the CF model of fusion.json, so of the served app
    set: dict[str, dict[str, Any]] = Field(default_factory=dict)  # {sasrec: {epochs: 20}}, as --set
    num_cpus: float = Field(2.0, gt=0)  # CPUs (and threads) per training task

    @model_validator(mode="after")
    def _backbone_trained(self) -> CFSpec:
        if self.backbone not in self.models:
            raise ValueError(f"backbone {self.backbone!r} is not among models {self.models}")
        return self

    @field_validator("set")
    @classmethod
    def _typed(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from actors.cf.overrides import parse_overrides

        return parse_overrides(set_items(value))


class SearchSpec(_Strict):
    """The fusion searches (``q2rec search`` and every fused row of the report)."""

    trials: int = Field(200, ge=1)  # Ray Tune trials per search


class ReportSpec(_Strict):
    enabled: bool = True
    targets: bool = True  # compare the report with the project's goals (information, never a failure)


class ServeSpec(_Strict):
    smoke: bool = True  # start the app, send requests, save the page (from a source checkout)
    screenshot: bool = True  # the explorer page as report/explorer.png (needs Chromium)


class PipelineConfig(_Strict):
    """One typed pipeline config; every key has a default that works on the packaged data."""

    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    llm: LLMSpec = Field(default_factory=LLMSpec)
    cf: CFSpec = Field(default_factory=CFSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    report: ReportSpec = Field(default_factory=ReportSpec)
    serve: ServeSpec = Field(default_factory=ServeSpec)

    @field_validator("dataset", mode="before")
    @classmethod
    def _dataset_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _dataset_exists(self) -> PipelineConfig:
        d = self.dataset
        if not (d.name == "ml-100k" or d.path or d.reviews or Path(d.name).is_dir()):
            raise ValueError(f"dataset.name {d.name!r}: not a folder, and only 'ml-100k' ships with q2rec "
                             "(give a folder of interactions.csv + items.csv, or dataset.path / reviews + meta)")  # fmt: skip
        return self

    @classmethod
    def load(cls, path: Path | None = None, **overrides: Any) -> PipelineConfig:
        """The config of the YAML file ``path`` (or the defaults), with ``overrides`` (dotted keys:
        ``{"dataset.name": "x", "llm.enabled": False}``) applied; refused with a message naming each bad key."""
        doc: dict[str, Any] = {}
        if path is not None:
            try:
                doc = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"{path}: {exc}") from None
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: expected a mapping of sections, got {type(doc).__name__}")
            if isinstance(doc.get("dataset"), str):
                doc["dataset"] = {"name": doc["dataset"]}
        for key, value in overrides.items():
            section, _, field = key.partition(".")
            if doc.get(section) is None:  # absent, or a section whose keys are all commented out
                doc[section] = {}
            doc[section][field] = value
        try:
            return cls.model_validate(doc)
        except ValidationError as exc:
            where = f"{path}: " if path else ""
            lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()]
            raise ValueError(where + "; ".join(lines)) from None


def set_items(overrides: dict[str, dict[str, Any]]) -> list[str]:
    """``{"sasrec": {"epochs": 20}}`` -> ``["sasrec.epochs=20"]``: the ``--set`` items of CF overrides."""
    if not isinstance(overrides, dict) or not all(isinstance(v, dict) for v in overrides.values()):
        raise ValueError("expected {MODEL: {FIELD: VALUE}}, e.g. {sasrec: {epochs: 20}}")
    return [
        f"{m}.{f}={v if isinstance(v, str) else repr(v)}"
        for m, fs in overrides.items()
        for f, v in fs.items()
    ]


def stages(cfg: PipelineConfig, artifacts: str | None) -> list[tuple[str, list[str]]]:
    """The stages ``cfg`` runs, in order: (name, the stage's q2rec arguments)."""
    from data_prep.artifacts import ArtifactPaths
    from data_prep.prepare import PrepareConfig
    from tune.experiments import BACKBONES

    d, llm, cf = cfg.dataset, cfg.llm, cfg.cf
    name = PrepareConfig(d.name, d.path, d.reviews, d.meta, d.kcore, d.cold_items).name
    root = ["--artifacts", artifacts] if artifacts else []
    common = [*root, "--dataset", name]  # every stage after prepare names the prepared folder
    paths = ArtifactPaths.for_dataset(name, artifacts)
    engine = [
        "--engine",
        llm.engine,
        "--base-url",
        llm.base_url,
        *(["--model", llm.model] if llm.model else []),
    ]
    sets = [a for item in set_items(cf.set) for a in ("--set", item)]
    models = ",".join(cf.models)
    prepare = [*root, "--dataset", d.name, "--kcore", str(d.kcore), "--cold-items", str(d.cold_items)]
    prepare += [a for k in ("path", "reviews", "meta") if getattr(d, k) for a in (f"--{k}", getattr(d, k))]
    out: list[tuple[str, list[str]]] = [("prepare", prepare)]
    if llm.enabled:
        out.append(("enrich", [*common, *engine, "--batch-size", str(llm.batch_size)]))
    out.append(("index", [*common, "--text", "both" if llm.enabled else "metadata"]))
    out.append(("train", [*common, "--models", models, *sets, "--num-cpus", str(cf.num_cpus)]))
    out.append(("evaluate", [*common, "--models", models, *sets, "--out", str(paths.root / "evaluation.json"),
                             "--item-embeddings", str(paths.item_vectors("metadata"))]))  # fmt: skip
    if llm.enabled:
        out.append(("content", [*common, "--out", str(paths.root / "content_ablation.json")]))
        out.append(("queries", [*common, *engine, "--batch-size", str(llm.batch_size)]))
        backbones = [m for m in cf.models if m in BACKBONES]
        if llm.rerank_users and backbones:
            rerank_cf = cf.backbone if cf.backbone in backbones else backbones[0]
            out.append(("llm-rerank", [*common, *engine, "--cf", rerank_cf, "--users", str(llm.rerank_users),
                                       "--pointwise-engine", llm.rerank_pointwise_engine, *sets]))  # fmt: skip
    weights = "auto" if llm.enabled else "last,recent"
    out.append(("search", [*common, "--cf", cf.backbone, "--trials", str(cfg.search.trials), "--weights", weights,
                           *sets]))  # fmt: skip
    if cfg.report.enabled:
        no_llm = [] if llm.enabled else ["--no-llm"]
        out.append(
            ("report", [*common, "--trials", str(cfg.search.trials), "--models", models, *no_llm, *sets])
        )
        if cfg.report.targets:
            out.append(("targets", common))
    if cfg.serve.smoke:
        shot = ["--screenshot", str(paths.report / "explorer.png")] if cfg.serve.screenshot else []
        out.append(("smoke", [*common, *shot, *([] if llm.enabled else ["--engine", "none"])]))
    return out


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The options of ``q2rec run``."""
    ap.add_argument(
        "config", nargs="?", type=Path, help="a pipeline YAML file (default: the packaged defaults)"
    )
    ap.add_argument("--no-llm", action="store_true", help="no LLM stage: the no-LLM comparison and app")
    ap.add_argument("--trials", type=int, help="Ray Tune trials per fusion search (search.trials)")
    ap.add_argument(
        "--no-smoke", action="store_true", help="end after the report, without the app's smoke run"
    )
    ap.add_argument(
        "--dry-run", action="store_true", help="check the config and print the stages; run nothing"
    )


def command(args: argparse.Namespace) -> int:
    """Check the whole config, then run every stage in order; the first stage that fails ends the run."""
    from q2rec.cli import checkout_root, main

    overrides: dict[str, Any] = {}
    if args.dataset:
        overrides["dataset.name"] = args.dataset
    if args.no_llm:
        overrides["llm.enabled"] = False
    if args.trials is not None:
        overrides["search.trials"] = args.trials
    if args.no_smoke:
        overrides["serve.smoke"] = False
    cfg = PipelineConfig.load(args.config, **overrides)
    plan = stages(cfg, args.artifacts)
    if cfg.serve.smoke and checkout_root() is None:
        print("note: the smoke run needs a source checkout of q2rec; `q2rec serve` starts the app instead")
        plan = [(n, a) for n, a in plan if n != "smoke"]
    if args.dry_run:
        for name, argv in plan:
            print("q2rec", name, " ".join(argv))
        return 0
    times: list[tuple[str, float]] = []
    for i, (name, argv) in enumerate(plan, 1):
        print(f"\n==> [{i}/{len(plan)}] q2rec {name} {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        try:
            code = main([name, *argv])
        except SystemExit as exc:  # a stage's own option parser refused its arguments
            code = exc.code if isinstance(exc.code, int) else 2
        times.append((name, time.perf_counter() - t0))
        if code != 0:
            print(f"error: stage {name} failed (exit {code}); fix it and rerun `q2rec run`: finished stages are "
                  "reused", file=sys.stderr)  # fmt: skip
            return code
    print("\n| stage | wall s |\n|---|---:|")
    for name, s in times:
        print(f"| {name} | {s:,.1f} |")
    print(f"| total | {sum(s for _, s in times):,.1f} |")
    return 0
