"""The synthetic generator: deterministic, written as prepare writes, and with the structure that makes the
models' work real (a power law, drifting interests a sequential model can follow, topical texts)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_prep.schema import DataError
from data_prep.synthetic import SyntheticConfig, generate, write
from q2rec.cli import main as q2rec

SMALL = SyntheticConfig(users=3000, items=2000, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from data_prep.corpus import Corpus

    return Corpus.load(write(SMALL, tmp_path_factory.mktemp("synthetic")))


def test_same_seed_same_data_and_another_seed_differs():
    tiny = SyntheticConfig(users=50, items=200, seed=3)
    a, b = generate(tiny), generate(tiny)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    pd.testing.assert_frame_equal(a.items, b.items)
    c = generate(SyntheticConfig(users=50, items=200, seed=4))
    assert not a.interactions.equals(c.interactions)


def test_written_like_a_prepared_dataset(tmp_path):
    from data_prep.artifacts import ArtifactPaths, read_json

    assert (
        q2rec(["synthetic", "--users", "60", "--items", "300", "--seed", "1", "--artifacts", str(tmp_path)])
        == 0
    )
    paths = ArtifactPaths.for_dataset("synthetic-60x300-s1", tmp_path)
    manifest = read_json(paths.prepare_manifest)
    assert (manifest["users"], manifest["items"]) == (60, 300)
    assert 20 * 60 <= manifest["interactions"] <= 50 * 60
    inter = pd.read_parquet(paths.interactions)
    assert (
        list(inter.columns) == ["user_id", "item_id", "timestamp"]
        and not inter.duplicated(["user_id", "item_id"]).any()
    )
    assert {"item_id", "title", "genres", "description"} <= set(pd.read_parquet(paths.items).columns)
    assert len(pd.read_parquet(paths.split("test"))) == 60


def test_popularity_follows_a_power_law(corpus):
    counts = np.sort(np.bincount(np.concatenate(corpus.train_seqs), minlength=corpus.n_items))[::-1]
    top_share = counts[: corpus.n_items // 10].sum() / counts.sum()
    ranks = np.arange(1, corpus.n_items // 2 + 1)
    slope = np.polyfit(np.log(ranks), np.log(counts[: len(ranks)]), 1)[0]
    assert top_share > 0.3 and slope < -0.4, (top_share, slope)  # uniform: 0.1 and 0


def _ndcg(scores: np.ndarray, corpus) -> float:
    from actors.ranking import mask_items, ndcg_at_k, target_ranks

    users = corpus.eval_users("valid")
    return ndcg_at_k(
        target_ranks(mask_items(scores, corpus.histories("valid", users)), corpus.target("valid")[users]), 10
    )


def test_a_sequential_model_and_content_beat_popularity(corpus):
    """SASRec (a few epochs) and last-item text retrieval both beat popularity on valid NDCG@10."""
    from actors.cf.popularity import Popularity
    from actors.cf.sasrec import SASRec, SASRecConfig
    from actors.encoder import TextEncoder

    users = corpus.eval_users("valid")
    histories = corpus.histories("valid", users)
    pop = Popularity().fit(corpus.train_seqs, corpus.n_items)
    sasrec = SASRec(SASRecConfig(max_len=20, hidden=32, blocks=1, epochs=4, patience=4, dropout=0.2,
                                 lr=3e-3, progress=False)).fit(corpus.train_seqs, corpus.n_items)  # fmt: skip
    vectors = TextEncoder().encode(corpus.items["description"].tolist())
    last = vectors[[h[-1] for h in histories]]
    ndcg = {"pop": _ndcg(pop.score(histories), corpus), "sasrec": _ndcg(sasrec.score(histories), corpus),
            "content": _ndcg(last @ vectors.T, corpus)}  # fmt: skip
    print(f"\nsynthetic {SMALL.users}x{SMALL.items}, valid NDCG@10: {ndcg}")
    assert ndcg["sasrec"] > 1.5 * ndcg["pop"] and ndcg["content"] > 1.5 * ndcg["pop"], ndcg


def test_sasrec_above_its_full_softmax_size_trains_a_sampled_softmax_that_learns(corpus):
    """Above ``full_softmax_max_items`` SASRec samples 512 negatives by popularity (log-q corrected); in
    the same 4 epochs it learns most of what the full softmax does (0.142 vs 0.151 valid NDCG@10 when
    measured) and far more than popularity."""
    from actors.cf.popularity import Popularity
    from actors.cf.sasrec import SASRec, SASRecConfig

    users = corpus.eval_users("valid")
    histories = corpus.histories("valid", users)
    cfg = SASRecConfig(max_len=20, hidden=32, blocks=1, epochs=4, patience=4, dropout=0.2, lr=3e-3,
                       progress=False, full_softmax_max_items=corpus.n_items - 1, negatives=512)  # fmt: skip
    sampled = SASRec(cfg).fit(corpus.train_seqs, corpus.n_items)
    assert sampled.fit_info["softmax"] == "sampled"
    pop = _ndcg(Popularity().fit(corpus.train_seqs, corpus.n_items).score(histories), corpus)
    assert _ndcg(sampled.score(histories), corpus) > 2 * pop


def test_sasrec_lr_decay_lowers_the_rate_after_epochs_without_a_better_validation(corpus):
    """With ``lr_decay`` < 1 the rate is multiplied by it once ``lr_patience`` epochs in a row bring no
    better validation NDCG@10 (here 0: after each such epoch); the default keeps it fixed."""
    from actors.cf import ValidationSet
    from actors.cf.sasrec import SASRec, SASRecConfig

    users = corpus.eval_users("valid")[:300]
    valid = ValidationSet(corpus.histories("valid", users), corpus.valid_target[users])
    cfg = SASRecConfig(max_len=20, hidden=32, blocks=1, epochs=6, patience=6, lr=0.03, lr_decay=0.5,
                       lr_patience=0, progress=False)  # fmt: skip
    history = SASRec(cfg).fit(corpus.train_seqs, corpus.n_items, valid).fit_info["history"]
    best, rate = -1.0, cfg.lr
    for row in history:
        rate = rate if row["valid_ndcg10"] > best else rate * 0.5
        best = max(best, row["valid_ndcg10"])
        assert row["lr"] == pytest.approx(rate)
    assert rate < cfg.lr  # the high rate makes validation stall, so the rate was lowered
    with pytest.raises(ValueError, match=r"sasrec.lr_decay must be in \(0, 1\] .*got 0"):
        SASRecConfig(lr_decay=0)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [({"users": 0}, "--users: must be at least 1, got 0"),
     ({"items": 20}, "--items: 20 is too few"),
     ({"min_per_user": 30, "max_per_user": 10}, "--per-user: max 10 is below min 30")],
)  # fmt: skip
def test_bad_sizes_name_the_flag(kwargs, needle):
    with pytest.raises(DataError, match=needle):
        SyntheticConfig(**kwargs)
