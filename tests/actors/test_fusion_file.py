"""``fusion.json`` through its one owner: written and read back equal, and every bad key refused by name."""

from __future__ import annotations

import json

import pytest

from actors.fusion_file import FusionFile, FusionFileError, TunedFusion
from actors.rerank import FusionConfig
from actors.retrieval_query import RetrievalWeights

GOOD = {
    "config": {"method": "fixed", "alpha": 0.7, "n": 50},
    "weights": {"last": 1.0, "llm": 0.3},
    "cf": "ease",
    "selected": "llm/fixed",
    "valid": {"NDCG@10": 0.1},
    "best": {"source": "llm", "config": {"method": "rrf"}, "weights": {"last": 1.0}, "valid_ndcg10": 0.11},
    "trials": 40,
    "objective": ["ndcg10"],
}


def test_written_and_read_back_equal(tmp_path):
    path = tmp_path / "fusion.json"
    saved = FusionFile.model_validate(GOOD)
    saved.save(path)
    again = FusionFile.load(path)
    assert again == saved
    assert again.config == FusionConfig(method="fixed", alpha=0.7, n=50)
    assert again.weights == RetrievalWeights(last=1.0, llm=0.3)
    assert "source" not in json.loads(path.read_text())  # where it was read from is not part of the file


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"config": {"method": "bogus"}}, "config.method"),
        ({"config": {"metod": "fixed"}}, "config.metod"),
        ({"config": {"alpha": 1.5}}, "alpha must be a number in [0, 1]"),
        ({"config": {"n": 0}}, "n must be a number in [1, inf]"),
        ({"weights": {"lastitem": 1.0}}, "weights.lastitem"),
        ({"weights": {"llm": -1}}, "retrieval weight llm"),
        ({"retrieval": "llm"}, "retrieval"),  # a key of no release: refused, not read as something else
        ({"best": {"config": {"method": "x"}}}, "best: config.method"),
    ],
)
def test_a_bad_key_is_refused_with_the_file_and_key_named(tmp_path, change, named):
    path = tmp_path / "fusion.json"
    path.write_text(json.dumps(GOOD | change))
    with pytest.raises(FusionFileError) as err:
        FusionFile.load(path)
    assert str(path) in str(err.value) and named in str(err.value)


def test_records_holding_more_give_their_config_and_weights():
    search = {"config": {"method": "adaptive", "a": 1.0}, "weights": {"last": 0.5}, "valid": {}, "trials": 3}
    tuned = TunedFusion.of(search, "search")
    assert tuned.config.a == 1.0 and tuned.weights.last == 0.5
    assert TunedFusion.of(tuned.model_dump(mode="json")) == tuned
    with pytest.raises(FusionFileError, match=r"search: config\.norm"):
        TunedFusion.of({"config": {"norm": "l2"}}, "search")
