"""The report's pieces: the experiment matrix, fused rows on known branches, the measured comparisons and
the separate target check, plots and markdown."""

from __future__ import annotations

import json

import numpy as np
import pytest

from actors.rerank import FusionConfig
from tune.experiments import fused_rows
from tune.render import markdown, plot, stage_table
from tune.report import comparisons
from tune.rows import fused_metrics
from tune.search import search_space
from tune.targets import check

from .test_search import CTX, branches


def test_fused_rows_cover_both_backbones_and_each_llm_use():
    rows = {r.name: r for r in fused_rows(("llm", "enriched"))}
    assert set(rows) == {
        f"fused_{cf}_{u}" for cf in ("sasrec", "ease") for u in ("nollm", "enrich", "query", "llm")
    }
    assert (
        rows["fused_ease_nollm"].use.tuned == ("last", "recent") and rows["fused_ease_nollm"].use.needs == ()
    )
    assert rows["fused_sasrec_llm"].use.tuned == ("last", "recent", "llm", "enriched")
    assert {r.name for r in fused_rows(())} == {"fused_sasrec_nollm", "fused_ease_nollm"}  # --no-llm
    assert {r.name for r in fused_rows(("llm",))} >= {"fused_ease_query"} and "fused_ease_enrich" not in {
        r.name for r in fused_rows(("llm",))}  # fmt: skip


def test_als_has_its_rows_when_asked_for_and_every_cf_model_is_known():
    from actors.cf import MODELS
    from tune.experiments import CF_MODELS, DEFAULT_MODELS, backbones, serial_rows

    assert set(CF_MODELS) == set(MODELS) and "als" not in DEFAULT_MODELS  # its searches cost demo time
    assert backbones(("pop", "als")) == ("als",)
    assert {r.name for r in fused_rows((), ("pop", "ease", "als"))} == {"fused_ease_nollm", "fused_als_nollm"}
    assert [r.name for r in serial_rows((), ("als",))] == [f"serial_als_retrieval_k{k}" for k in (20, 50)]


def test_search_space_rejects_unknown_methods():
    with pytest.raises(ValueError, match="'softmax'"):
        search_space(("adaptive", "softmax"))


def test_fused_metrics_known_answer_and_history_buckets():
    b = branches()
    cf_only = fused_metrics(b, FusionConfig(method="fixed", alpha=1.0), CTX)
    assert cf_only["Recall@10"] == 1.0 and cf_only["MRR"] == pytest.approx((1 + 1 / 5) / 2)
    assert cf_only["by_history_length"] == {"20-49": {"users": 40, "Recall@10": 1.0, "NDCG@10": pytest.approx(
        cf_only["NDCG@10"])}}  # fmt: skip
    assert cf_only["mean_alpha"] == 1.0


def _metrics(ndcg, cov=0.3, tail=0.05):
    return {"Recall@10": 2 * ndcg, "NDCG@10": ndcg, "Coverage@10": cov, "TailRecall@10": tail}


def _groups(recall):
    return {g: {"users": n, "Recall@10": recall * f, "NDCG@10": recall * f / 2}
            for g, n, f in (("head", 5, 2), ("mid", 3, 1), ("tail", 1, 0.5))}  # fmt: skip


def _report():
    results = {
        "ease": {"valid": _metrics(0.08), "test": _metrics(0.07)},
        "sasrec": {"valid": _metrics(0.10), "test": _metrics(0.09, 0.34, 0.08), "by_target_popularity": _groups(0.1)},
        "retrieval_lastitem": {"valid": _metrics(0.027), "test": _metrics(0.03)},
        "retrieval_query": {"valid": _metrics(0.02), "test": _metrics(0.02)},
        "fused_sasrec_llm": {"valid": _metrics(0.10), "test": _metrics(0.091, 0.40, 0.09),
                             "by_target_popularity": _groups(0.12),
                             "by_history_length": {"0-19": {"users": 5, "Recall@10": 0.2, "NDCG@10": 0.1}}},
        "fused_ease_llm": {"valid": _metrics(0.09), "test": _metrics(0.0805), "fusion": {
            "cf": "ease", "uses": "llm", "tuned_weights": ["last", "llm"], "rows": "full",
            "selected": {"name": "nollm/fixed", "valid_ndcg10": 0.09, "config": {"method": "fixed"},
                         "weights": {"llm": 0.0, "enriched": 0.0}},
            "best": {"name": "llm/adaptive", "valid_ndcg10": 0.095, "test": {"NDCG@10": 0.079}}},
            "vs_nollm": {"ndcg10_diff": -0.002, "ci95": [-0.006, 0.001],
                         "best_on_valid": {"ndcg10_diff": -0.004, "ci95": [-0.009, -0.001]}},
            "llm_weights": {"llm": 0.0, "enriched": 0.0}},
    }  # fmt: skip
    protocol = {"dataset": "toy", "users": 9, "items": 100, "interactions": 50, "split": "loo", "ranking": "full",
                "fused_and_query_rows": "lists", "tuning": "tune", "llm_inputs": ["llm"], "test_users": 9}  # fmt: skip
    return {"protocol": protocol, "results": results, "comparisons": comparisons(results), "cost": {"x": 1}}


def test_comparisons_state_measured_numbers_only():
    c = _report()["comparisons"]
    ease = c["fused_ease_llm_vs_ease"]
    assert ease["ndcg10_gain"] == pytest.approx(0.15)
    assert ease["test"]["Coverage@10"] == {"fused_ease_llm": 0.3, "ease": 0.3}
    assert c["retrieval_query_vs_retrieval_lastitem"]["ndcg10_gain"] == pytest.approx(-1 / 3, abs=1e-3)
    assert not any("met" in v or "goal" in v for v in c.values())  # targets are a separate check
    assert "fused_ease_nollm_vs_ease" not in c  # a pair with a missing row is left out


def test_targets_are_a_separate_check_whichever_way_they_go():
    by_name = {r["target"].split(":")[0]: r for r in check(_report())}
    ease = by_name["fusion on EASE gains at least 30% test NDCG@10"]
    assert ease["gain"] == pytest.approx(0.15) and not ease["met"]
    assert by_name["fusion on SASRec"]["met"]  # 0.091 >= 0.09, coverage and tail higher
    nollm = by_name["fused_ease_llm not below fused_ease_nollm beyond noise"]
    assert nollm["met"] and nollm["ci95"] == [-0.006, 0.001]  # the interval reaches 0
    assert len(by_name) == 3


def test_comparisons_say_whether_a_difference_is_beyond_noise():
    results = _report()["results"]
    n = 400
    hit1, miss = np.ones(n, dtype=np.int64), np.full(n, 101)
    ranks = {
        "ease": np.where(np.arange(n) < 40, 1, 101),  # NDCG@10 0.10
        "fused_ease_llm": np.where(np.arange(n) < 80, 1, 101),  # +0.10 on 40 more users: separable
        "sasrec": np.where(np.arange(n) % 2 == 0, hit1, miss),
        "fused_sasrec_llm": np.where(
            np.arange(n) % 2 == 1, hit1, miss
        ),  # same NDCG, other users: not separable
    }
    b = comparisons(results, ranks)
    ease = b["fused_ease_llm_vs_ease"]
    assert ease["ndcg10_diff"] == pytest.approx(0.10) and ease["separable"]
    lo, hi = ease["ndcg10_diff_ci95"]
    assert 0 < lo < 0.10 < hi
    assert ease["gain_ci95"] == pytest.approx([lo / 0.07, hi / 0.07], abs=1e-3)  # relative to the test NDCG
    sas = b["fused_sasrec_llm_vs_sasrec"]
    assert sas["ndcg10_diff"] == 0.0 and not sas["separable"]
    assert sas["ndcg10_diff_ci95"][0] < 0 < sas["ndcg10_diff_ci95"][1]
    assert "ndcg10_diff" not in comparisons(results)["fused_sasrec_llm_vs_sasrec"]  # no ranks, no interval


def test_plots_and_markdown_are_written(tmp_path):
    report = _report()
    files = plot(report, tmp_path)
    assert [f.name for f in files] == ["metrics_test.png", "by_history_length.png", "by_popularity.png"]
    assert all(f.stat().st_size > 10_000 for f in files)
    md = markdown(report, files)
    assert (
        "| fused_ease_llm | test |" in md
        and "fused_ease_llm_vs_ease: NDCG@10 gain +15.0%" in md
        and "fused_ease_llm: selected -0.0020 [-0.006, 0.001], best on valid -0.0040" in md
        and "![metrics_test](metrics_test.png)" in md
        and "| row | head (5) R@10 / N@10 | mid (3) R@10 / N@10 | tail (1) R@10 / N@10 | ARP@10 | TailShare@10 |"
        in md
        and "| fused_sasrec_llm | 0.2400 / 0.1200 | 0.1200 / 0.0600 | 0.0600 / 0.0300 |" in md
    )
    assert "| valid |" not in stage_table(report)
    json.dumps(report)  # the report is plain JSON


@pytest.mark.slow
def test_report_end_to_end_on_ml100k(ray_cluster, ml100k, ml100k_content, artifacts_root, tmp_path, capsys):
    """Every row on real ML-100K: CF (SASRec shortened), metadata-fallback enrichment and queries, Tune."""
    from q2rec.cli import main as q2rec

    out = tmp_path / "report"
    sets = ["--set", "sasrec.epochs=2", "--set", "sasrec.patience=1"]
    assert (
        q2rec(
            [
                "train",
                "--dataset",
                "ml-100k",
                "--artifacts",
                str(artifacts_root),
                "--models",
                "pop,ease,sasrec",
                *sets,
            ]
        )
        == 0
    )
    rerank = ["--dataset", "ml-100k", "--artifacts", str(artifacts_root), "--cf", "ease", "--users", "6"]
    assert q2rec(["llm-rerank", *rerank, "--engine", "transformers", *sets]) == 0  # the real packaged model
    code = q2rec(["report", "--dataset", "ml-100k", "--artifacts", str(artifacts_root), "--trials", "6", "--out", str(out),
                 *sets])  # fmt: skip
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    llm = report["results"].pop("serial_ease_llm")  # on its sample only
    assert llm["test"]["users"] == 6 and llm["llm_rerank"]["mode"] in ("listwise", "pointwise")
    assert -1 <= llm["llm_rerank"]["position_bias"]["kendall_tau"] <= 1
    sample = report["llm_rerank"]["ease"]
    assert sample["users"] == 6 and set(sample["rows"]) == {
        "ease",
        "serial_ease_retrieval_k20",
        "serial_ease_retrieval_k50",
        "fused_ease_llm",
        "serial_ease_llm",
    }
    assert set(sample) >= {"ease_vs_serial_ease_llm", "fused_ease_llm_vs_serial_ease_llm"}
    fused = {f"fused_{cf}_{u}" for cf in ("sasrec", "ease") for u in ("nollm", "enrich", "query", "llm")}
    serial = {f"serial_{cf}_retrieval_k{k}" for cf in ("sasrec", "ease") for k in (20, 50)}
    assert (
        set(report["results"])
        == {"pop", "ease", "sasrec", "retrieval_lastitem", "retrieval_query"} | fused | serial
    )
    assert list(report["results"])[:12] == [
        r for r in report["results"] if r.startswith(("fused_", "serial_"))
    ]  # fused and serial first
    res = report["results"]
    assert res["pop"]["test"]["Recall@10"] == pytest.approx(0.0859, abs=0.001)  # the cross-checked protocol
    for name, row in res.items():
        for stage in ("valid", "test"):
            assert 0 < row[stage]["NDCG@10"] < 1 and row[stage]["users"] == 943, (name, stage)
        assert set(row["by_history_length"]) >= {"20-49", "200+"}
        groups = row["by_target_popularity"]
        assert set(groups) >= {"head", "mid", "tail", "warm"}
        assert sum(groups[g]["users"] for g in ("head", "mid", "tail")) == 943
        assert 0 <= row["test"]["TailShare@10"] <= 1 and row["test"]["ARP@10"] > 0
    assert res["pop"]["test"]["TailShare@10"] == 0.0  # the most popular items are head items
    for name in serial:
        f = res[name]["fusion"]
        k = f["cf_candidates"]
        assert f["selected"]["config"]["cf_candidates"] == k and f["parallel"] == f"fused_{f['cf']}_llm"
        assert f["tuned_weights"] == ["last", "recent", "llm", "enriched"]  # the widest fused row's
        if k == 20:  # only CF's top-20 can be answered: no target CF ranks below 20 is found
            assert res[name]["test"]["Recall@10"] <= res[f["cf"]]["test"]["Recall@20"] + 1e-12
        assert report["comparisons"][f"{f['parallel']}_vs_{name}"]["ndcg10_diff_ci95"]
    for name in fused:
        f = res[name]["fusion"]
        assert f["rows"] == "full" and f["selected"]["valid_ndcg10"] <= f["best"]["valid_ndcg10"] + 1e-12
        # the selected config is applied unchanged: its valid score is the one the selection measured
        assert res[name]["valid"]["NDCG@10"] == pytest.approx(f["selected"]["valid_ndcg10"])
        if name.endswith("_nollm"):
            assert (
                "vs_nollm" not in res[name]
                and f["selected"]["weights"]["llm"] == 0 == f["selected"]["weights"]["enriched"]
            )
        else:
            v = res[name]["vs_nollm"]
            assert v["ci95"][0] <= v["ndcg10_diff"] <= v["ci95"][1] and set(res[name]["llm_weights"]) == {
                "llm",
                "enriched",
            }
    assert (
        res["fused_ease_enrich"]["fusion"]["selected"]["weights"]["llm"] == 0
    )  # enrich never uses the queries
    assert set(report["comparisons"]) == {"fused_ease_llm_vs_ease", "fused_sasrec_llm_vs_sasrec",
                                          "fused_ease_nollm_vs_ease", "fused_sasrec_nollm_vs_sasrec",
                                          "retrieval_query_vs_retrieval_lastitem"} | {
        f"fused_{cf}_llm_vs_serial_{cf}_retrieval_k{k}" for cf in ("sasrec", "ease") for k in (20, 50)}  # fmt: skip
    cold = report["cold_items"]
    assert cold["cold_target_users"] + cold["warm_target_users"] == 943
    assert set(cold["rows"]["fused_sasrec_llm_vs_sasrec"]["warm"]) == {
        "Recall@10",
        "recall10_diff",
        "ci95",
        "separable",
    }
    assert all("test_ranks" not in row for row in res.values())
    assert {p.name for p in out.iterdir()} == {
        "report.json",
        "report.md",
        "metrics_test.png",
        "by_history_length.png",
        "by_popularity.png",
    }
    printed = capsys.readouterr().out
    assert "| fused_ease_llm | test |" in printed and "fused_ease_llm vs ease without the LLM" in printed
    assert "| serial_ease_retrieval_k20 | test |" in printed and "| row | head (" in printed
    assert "serial_ease_llm: ease's top-20 reranked by the LLM" in printed and "position bias" in printed
    assert "serial_" not in "".join(r for r in res if "vs_nollm" in res[r])  # serial rows carry no vs_nollm

    code = q2rec(["report", "--dataset", "ml-100k", "--artifacts", str(artifacts_root), "--trials", "6", "--out",
                 str(tmp_path / "nollm"), "--no-llm", *sets])  # fmt: skip
    assert code == 0
    nollm = json.loads((tmp_path / "nollm" / "report.json").read_text())["results"]
    assert set(nollm) == {
        "pop",
        "ease",
        "sasrec",
        "retrieval_lastitem",
        "fused_sasrec_nollm",
        "fused_ease_nollm",
    } | {f"serial_{cf}_retrieval_k{k}" for cf in ("sasrec", "ease") for k in (20, 50)}
    assert nollm["serial_ease_retrieval_k20"]["fusion"]["tuned_weights"] == ["last", "recent"]
    assert nollm["fused_ease_nollm"]["test"] == res["fused_ease_nollm"]["test"]  # the same search, reused

    # the searches ran two at a time as Ray tasks (the cluster has 2 CPUs); one run here alone gives the same
    from data_prep.artifacts import ArtifactPaths
    from tune.harness import evaluation_corpus
    from tune.search import METHODS, cached_search, search_cache

    paths = ArtifactPaths.for_dataset("ml-100k", str(artifacts_root))
    corpus = evaluation_corpus(paths)
    args = (paths, corpus, "ease", ("last", "recent", "llm"))
    beside_others = cached_search(*args, trials=6, methods=METHODS)
    search_cache(*args, trials=6, methods=METHODS).unlink()
    alone = cached_search(*args, trials=6, methods=METHODS)
    assert {k: v for k, v in alone.items() if k != "seconds"} == {
        k: v for k, v in beside_others.items() if k != "seconds"
    }
