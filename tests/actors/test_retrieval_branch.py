"""The retrieval branch with the packaged encoder and a real FAISS index over a tiny catalog."""

from __future__ import annotations

import numpy as np
import pytest

from actors.retrieval_branch import QueryRetrievalBranch, RetrievalBranchConfig
from actors.retriever import FaissRetriever

TEXTS = [
    "Star Wars (1977). Genres: Action, Adventure, Sci-Fi, War.",
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "Fargo (1996). Genres: Crime, Drama, Thriller.",
    "Alien (1979). Genres: Action, Horror, Sci-Fi, Thriller.",
    "Babe (1995). Genres: Children's, Comedy, Drama.",
]


@pytest.fixture(scope="module")
def encoder():
    from actors.encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="module")
def branch(encoder):
    retriever = FaissRetriever.build(encoder.encode(TEXTS), [str(i) for i in range(len(TEXTS))])
    return QueryRetrievalBranch(encoder, retriever, TEXTS, RetrievalBranchConfig(n=3))


def test_query_finds_the_matching_items_and_skips_the_history(branch):
    out = branch.search(["space battles and science fiction"], [np.array([], dtype=np.int64)])
    assert out.ids[0, 0] == 0 and out.ids.shape == (1, 3)
    again = branch.search(["space battles and science fiction"], [np.array([0])])
    assert 0 not in again.ids[0] and again.ids[0, 0] == 3  # Alien is the next sci-fi film
    assert np.all(np.diff(out.scores[0]) <= 1e-6)


def test_full_rows_agree_with_search_and_mask_history(branch):
    queries, hist = ["funny animated film for kids"], [np.array([4])]
    out = branch.search(queries, hist, rows="full")
    top = branch.search(queries, hist)
    assert out.full.shape == (1, len(TEXTS)) and out.full[0, 4] == -np.inf
    np.testing.assert_array_equal(out.ids, top.ids)
    np.testing.assert_allclose(out.full[0, top.ids[0]], top.scores[0], rtol=1e-5)


def test_last_item_text_is_appended_when_configured(encoder, branch):
    with_last = QueryRetrievalBranch(
        encoder, branch.retriever, TEXTS, RetrievalBranchConfig(with_last_item=True)
    )
    assert with_last.query_texts(["dark"], [np.array([1, 2])]) == [f"dark. {TEXTS[2]}"]
    assert with_last.query_texts(["dark"], [np.array([], dtype=np.int64)]) == ["dark"]
    assert branch.query_texts(["dark"], [np.array([2])]) == ["dark"]
