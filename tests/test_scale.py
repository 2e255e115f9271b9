"""Every offline stage at a small size, through the same CLIs ``bench/scale.py`` runs at large ones, with
the size switches turned low so the large-catalog paths run here: the approximate index (IVF with its
measured recall), SASRec's sampled softmax, top-N branch lists instead of full rows, and EASE's refusal."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from actors.branch import default_row_mode
from actors.retrieval_query import RetrievalWeights

ROOT = Path(__file__).resolve().parents[1]
USERS, ITEMS = 300, 400
NAME = f"synthetic-{USERS}x{ITEMS}-s0"
# sampled softmax and an IVF item index, as above 50,000 and 100,000 items
SASREC_SET = {"epochs": 2, "full_softmax_max_items": 100, "negatives": 64, "index": "ivf"}


def sasrec_sets(values: dict) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"sasrec.{k}={v}")]


SASREC = sasrec_sets(SASREC_SET)


def bench_scale():
    spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "bench" / "scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_growth_exponents_recover_known_slopes():
    scale = bench_scale()
    sizes = [(10_000, 10_000), (100_000, 100_000), (100_000, 1_000_000)]
    rows = [{"rc": 0, "users": u, "items": i, "wall_s": 1e-3 * u * i**0.5} for u, i in sizes]
    assert scale.growth(rows, "wall_s") == {"users": 1.0, "items": 0.5}
    assert scale.growth(rows[:2], "wall_s") == {"joint": 1.5}  # users and items grew together
    rows[2]["rc"] = 2  # a refused size is left out
    assert scale.growth(rows, "wall_s") == {"joint": 1.5}


@pytest.fixture(scope="module")
def small(ray_cluster, tmp_path_factory):
    from data_prep.artifacts import ArtifactPaths
    from q2rec.cli import main as q2rec

    root = tmp_path_factory.mktemp("scale")
    assert q2rec(["synthetic", "--users", str(USERS), "--items", str(ITEMS), "--artifacts", str(root)]) == 0
    return ArtifactPaths.for_dataset(NAME, str(root))


def cli(small, stage: str, *args: str) -> int:
    """``q2rec STAGE ARGS`` on the small synthetic dataset; its exit code."""
    from q2rec.cli import main as q2rec

    return q2rec([stage, *args, "--dataset", NAME, "--artifacts", str(small.root.parent)])


def test_every_stage_at_a_small_size(small, capsys, monkeypatch):
    from data_prep.corpus import Corpus
    from tune.branches_store import load_or_compute

    assert cli(small, "train", "--models", "ease", "--set", "ease.max_memory_gb=1e-6") == 2
    err = capsys.readouterr().err
    assert f"ease on {USERS:,} users x {ITEMS:,} items needs about" in err and "use sasrec" in err
    assert cli(small, "train", "--models", "pop,sasrec", *SASREC) == 0
    fit = json.loads((small.model_dir("sasrec") / "config.json").read_text())["fit_info"]
    assert fit["softmax"] == "sampled" and fit["epochs_run"] == 2
    cf_index = json.loads((small.model_dir("sasrec") / "index" / "index.json").read_text())
    assert cf_index["config"]["kind"] == "ivf" and cf_index["recall_on"] == "given queries"
    assert 0.9 <= cf_index["recall_at_10"] <= 1.0 and cf_index["recall_queries"] == USERS  # validation users

    assert cli(small, "index", "--text", "metadata", "--exact-max-items", "100") == 0
    info = json.loads((small.index_dir("metadata") / "index.json").read_text())
    assert info["config"]["kind"] == "ivf" and info["recall_queries"] == ITEMS
    assert 0.9 <= info["recall_at_10"] <= 1.0 and info["config"]["ivf_nprobe"] >= 1

    monkeypatch.setattr("tune.branches_store.default_row_mode", lambda n: "topn")  # as above 20,000 items
    corpus = Corpus.load(small)
    valid = load_or_compute(small, corpus, "valid", "sasrec", cf_overrides=SASREC_SET)
    assert valid.cf.mode == valid.retrieval.mode == "topn" and valid.cf.ids.shape == (USERS, 200)
    assert default_row_mode(ITEMS) == "full"  # the switch above is what made these lists top-N only
    # above full rows, trials score each user's candidates (tune.candidates), keeping the list form
    assert valid.tunable and valid.candidates is not None and not valid.candidates.full_rows
    from training.cf import load_trained
    from tune.branches_store import compute

    model = load_trained(small, "sasrec", SASREC_SET)
    assert model.index is not None  # the CF lists above came from the item index
    some = compute(
        small, corpus, "valid", model, RetrievalWeights(), users=[0, 5, 7]
    )  # what serve_latency checks
    np.testing.assert_array_equal(some.cf.ids, valid.cf.ids[[0, 5, 7]])
    np.testing.assert_array_equal(some.retrieval.ids, valid.retrieval.ids[[0, 5, 7]])
    other = valid.with_weights(RetrievalWeights(recent=0.5))
    assert other.retrieval.mode == "topn" and other.retrieval.ids.shape == valid.retrieval.ids.shape
    assert (other.retrieval.ids != valid.retrieval.ids).any()  # the recent items moved the lists

    assert cli(small, "search", "--cf", "sasrec", "--trials", "3", *SASREC) == 0  # --weights auto
    fusion = json.loads(small.fusion.read_text())
    assert fusion["trials"] == 3 and 0 < fusion["valid"]["NDCG@10"] <= 1
    assert fusion["tuned_weights"] == ["last", "recent"]  # searched over the candidates at this size too

    out = small.root / "report.json"
    assert cli(small, "evaluate", "--models", "pop,sasrec", *SASREC, "--out", str(out)) == 0
    results = json.loads(out.read_text())["results"]
    ndcg = {m: results[m]["test"]["NDCG@10"] for m in ("pop", "sasrec")}
    assert all(0 < v <= 1 for v in ndcg.values()) and np.isfinite(list(ndcg.values())).all()

    from tune.branches_store import branch_file

    weights = small.model_dir("sasrec") / "weights.pt"
    trained = weights.stat().st_mtime_ns
    cached = branch_file(small, "valid", "sasrec", corpus)
    assert cli(small, "train", "--models", "sasrec", *sasrec_sets(SASREC_SET | {"index": "flat"})) == 0
    assert not (small.model_dir("sasrec") / "index").exists()  # exact ranking asked: the index is dropped
    assert weights.stat().st_mtime_ns == trained  # and the model is reused, not trained again
    assert branch_file(small, "valid", "sasrec", corpus) != cached  # lists of the index
