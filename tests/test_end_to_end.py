"""ML-100K end to end: prepare -> split -> train (as Ray tasks, ``training.cf``) -> evaluate -> JSON + table."""

from __future__ import annotations

import json

import pytest

from q2rec.cli import main as q2rec
from training.cf import ModelNotTrained
from tune.evaluate import markdown_table, run

pytestmark = pytest.mark.slow

FAST_SASREC = {"epochs": 2, "max_len": 50, "patience": 1}


@pytest.fixture(scope="module")
def report(ray_cluster, ml100k, artifacts_root):
    sets = [f"--set=sasrec.{k}={v}" for k, v in FAST_SASREC.items()]
    assert q2rec(["train", "--models", "pop,ease,sasrec", "--artifacts", str(artifacts_root), *sets]) == 0
    return run(
        "ml-100k", ["pop", "ease", "sasrec"], overrides={"sasrec": FAST_SASREC}, artifacts_root=artifacts_root
    )


def test_protocol_cross_check_popularity(report):
    """An independent implementation measured Recall@10 = 0.0859, NDCG@10 = 0.0440 (+-0.001) on test."""
    test = report["results"]["pop"]["test"]
    assert test["Recall@10"] == pytest.approx(0.0859, abs=0.001)
    assert test["NDCG@10"] == pytest.approx(0.0440, abs=0.001)


def test_report_schema(report):
    assert report["protocol"]["dataset"] == "ml-100k"
    assert report["protocol"]["test_users"] == 943
    for model in ("pop", "ease", "sasrec"):
        for stage in ("valid", "test"):
            metrics = report["results"][model][stage]
            for key in (
                "Recall@10",
                "NDCG@10",
                "MRR",
                "Coverage@10",
                "Novelty@10",
                "TailRecall@10",
                "Recall@20",
            ):
                assert 0.0 <= metrics[key] <= (20 if key.startswith("Novelty") else 1.0), (model, stage, key)
        assert set(report["results"][model]["by_history_length"]["test"]) >= {"20-49", "200+"}
    table = markdown_table(report["results"])
    assert table.count("\n") == 1 + 6 and "| sasrec | test |" in table


def test_ease_is_tuned_on_validation_and_beats_popularity(report):
    ease, pop = report["results"]["ease"], report["results"]["pop"]
    by_lambda = ease["fit_info"]["valid_ndcg10_by_lambda"]
    assert str(ease["fit_info"]["lam"]) == max(by_lambda, key=by_lambda.get)
    assert ease["test"]["Recall@10"] >= 1.6 * pop["test"]["Recall@10"]


def test_trained_models_are_saved_and_reused(report, ml100k, artifacts_root):
    folder = ml100k.model_dir("sasrec")
    stamp = (folder / "weights.pt").stat().st_mtime_ns
    sets = [f"--set=sasrec.{k}={v}" for k, v in FAST_SASREC.items()]
    assert q2rec(["train", "--models", "sasrec", "--artifacts", str(artifacts_root), *sets]) == 0  # reused
    again = run("ml-100k", ["sasrec"], overrides={"sasrec": FAST_SASREC}, artifacts_root=artifacts_root)
    assert (folder / "weights.pt").stat().st_mtime_ns == stamp
    assert again["results"]["sasrec"]["test"] == report["results"]["sasrec"]["test"]
    saved = json.loads((folder / "config.json").read_text())
    assert saved["config"]["max_len"] == 50 and saved["fit_info"]["epochs_run"] <= 2


def test_cli_on_a_generic_folder(ray_cluster, csv_folder, tmp_path, capsys):
    folder = csv_folder("tiny", users=30, items=12, per_user=6)
    out = tmp_path / "eval.json"
    args = ["--dataset", str(folder), "--models", "pop,ease", "--artifacts", str(tmp_path / "art")]
    assert q2rec(["evaluate", *args, "--out", str(out)]) == 2  # nothing trained yet: a clear error
    assert "no trained pop; run `q2rec train --dataset tiny --models pop`" in capsys.readouterr().err
    assert q2rec(["train", *args]) == 0
    code = q2rec(["evaluate", *args, "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| ease | test |" in printed and "30 users, 12 items" in printed
    assert set(json.loads(out.read_text())["results"]) == {"pop", "ease"}


def test_cli_rejects_unknown_model_and_bad_override(capsys, tmp_path):
    for stage in ("evaluate", "train"):
        assert q2rec([stage, "--models", "pop,nope", "--artifacts", str(tmp_path)]) == 2
        assert "unknown model(s) ['nope']" in capsys.readouterr().err
        assert q2rec([stage, "--models", "pop", "--set", "pop", "--artifacts", str(tmp_path)]) == 2
        assert "expected MODEL.FIELD=VALUE" in capsys.readouterr().err


def test_a_model_trained_with_another_config_is_not_loaded(report, ml100k, artifacts_root):
    from training.cf import load_trained

    with pytest.raises(ModelNotTrained, match="trained on other data or with another config"):
        load_trained(ml100k, "sasrec", {"epochs": 3})
