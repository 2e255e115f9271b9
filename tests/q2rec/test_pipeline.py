"""``q2rec run``: the typed pipeline config, refused before any stage runs when wrong, and a real run on a
folder of CSV files without the LLM, with the CF backbones it names."""

from __future__ import annotations

import json

import pytest

from q2rec.cli import main
from q2rec.pipeline import PipelineConfig, stages


def tiny_shop(csv_folder):
    return csv_folder("tiny-shop", users=40, items=16, per_user=7, stride=3,
                      titles=("red kettle", "blue mug", "steel pan", "oak board"))  # fmt: skip


def test_the_defaults_are_the_packaged_demo():
    plan = dict(stages(PipelineConfig.load(), None))
    assert list(plan)[:3] == ["prepare", "enrich", "index"] and "queries" in plan and "llm-rerank" in plan
    assert plan["search"][plan["search"].index("--cf") + 1] == "sasrec"
    assert plan["report"][plan["report"].index("--models") + 1] == "pop,ease,sasrec"


def test_als_is_a_cf_model_and_a_backbone(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("cf: {models: [pop, als], backbone: als, set: {als: {factors: 32}}}\n")
    plan = dict(stages(PipelineConfig.load(path), None))
    train = plan["train"]
    assert train[train.index("--models") + 1] == "pop,als" and "als.factors=32" in train
    assert plan["search"][plan["search"].index("--cf") + 1] == "als"
    assert plan["llm-rerank"][plan["llm-rerank"].index("--cf") + 1] == "als"


@pytest.mark.parametrize(
    ("yaml_text", "names"),
    [
        ("bogus: 1\n", "bogus: Extra inputs are not permitted"),
        ("llm: {engine: gpt}\n", "llm.engine: Input should be 'auto', 'vllm', 'transformers' or 'openai'"),
        ("search: {trials: 0}\n", "search.trials: Input should be greater than or equal to 1"),
        ("cf: {models: [pop, ease], backbone: sasrec}\n", "backbone 'sasrec' is not among models"),
        ("cf: {models: [pop, bpr]}\n", "cf.models.1: Input should be 'pop', 'ease', 'sasrec' or 'als'"),
        ("cf: {set: {sasrec: {epoch: 3}}}\n", "sasrec has no field 'epoch'"),
        ("cf: {set: {ease: {lam: big}}}\n", "ease.lam takes float; got 'big'"),
        ("dataset: no/such/folder\n", "dataset.name 'no/such/folder': not a folder"),
        (
            "dataset: {name: ml-100k, kcore: -1}\n",
            "dataset.kcore: Input should be greater than or equal to 0",
        ),
        ("- a list\n", "expected a mapping of sections"),
    ],
)
def test_a_bad_config_is_refused_before_any_stage_naming_the_key(tmp_path, capsys, yaml_text, names):
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml_text)
    assert main(["run", str(path), "--artifacts", str(tmp_path / "art")]) == 2
    err = capsys.readouterr().err
    assert names in err and str(path) in err
    assert not (tmp_path / "art").exists()  # no stage ran


def test_no_llm_leaves_every_llm_stage_out(csv_folder, capsys):
    folder = tiny_shop(csv_folder)
    assert main(["run", "--dataset", str(folder), "--no-llm", "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[1] for line in printed] == [
        "prepare", "index", "train", "evaluate", "search", "report", "targets", "smoke",
    ]  # fmt: skip
    assert (
        "--text metadata" in printed[1] and "--no-llm" in printed[5] and "--weights last,recent" in printed[4]
    )
    assert all("--dataset tiny-shop" in line for line in printed[1:])


def test_a_run_on_csv_files_without_the_llm_reports_the_backbones_it_names(ray_cluster, csv_folder, tmp_path,
                                                                          capsys):  # fmt: skip
    """The whole no-LLM pipeline for real (prepare, index, train, evaluate, search, report) on a small shop
    catalog, with EASE as the only backbone: no SASRec is trained, and the report has no SASRec row."""
    folder = tiny_shop(csv_folder)
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"dataset: {folder}\nllm: {{enabled: false}}\ncf: {{models: [pop, ease], backbone: ease}}\n"
                      "search: {trials: 4}\nserve: {smoke: false}\n")  # fmt: skip
    art = tmp_path / "art"
    assert main(["run", str(config), "--artifacts", str(art)]) == 0
    printed = capsys.readouterr().out
    assert "| report |" in printed and "| total |" in printed
    root = art / "tiny-shop"
    assert not (root / "models" / "sasrec").exists() and (root / "models" / "ease").is_dir()
    results = json.loads((root / "report" / "report.json").read_text())["results"]
    assert {"pop", "ease", "retrieval_lastitem", "fused_ease_nollm"} <= set(results)
    assert not [name for name in results if "sasrec" in name or name.endswith(("_llm", "_query", "_enrich"))]
    assert json.loads((root / "fusion.json").read_text())["cf"] == "ease"
    assert main(["run", str(config), "--artifacts", str(art)]) == 0  # a rerun reuses what is done
    assert "ease: " in capsys.readouterr().out


def test_an_empty_section_takes_the_flags(tmp_path):
    path = tmp_path / "pipeline.yaml"
    path.write_text("llm:\n  # enabled: true\nsearch:\n")
    cfg = PipelineConfig.load(path, **{"llm.enabled": False, "search.trials": 3})
    assert cfg.llm.enabled is False and cfg.search.trials == 3 and cfg.llm.engine == "auto"
