"""The retrieval branch with the packaged encoder and a real FAISS index over a tiny catalog: the query is
the weighted sum of its parts, each embedded on its own."""

from __future__ import annotations

import numpy as np
import pytest

from actors.retrieval_branch import QueryRetrievalBranch
from actors.retrieval_query import QueryParts, RetrievalWeights, history_parts, item_vectors, mean_direction
from actors.retriever import FaissRetriever

TEXTS = [
    "Star Wars (1977). Genres: Action, Adventure, Sci-Fi, War.",
    "Toy Story (1995). Genres: Animation, Children's, Comedy.",
    "Fargo (1996). Genres: Crime, Drama, Thriller.",
    "Alien (1979). Genres: Action, Horror, Sci-Fi, Thriller.",
    "Babe (1995). Genres: Children's, Comedy, Drama.",
]
EMPTY = np.array([], dtype=np.int64)


@pytest.fixture(scope="module")
def encoder():
    from actors.encoder import TextEncoder

    return TextEncoder()


@pytest.fixture(scope="module")
def metadata(encoder):
    return encoder.encode(TEXTS)


def branch(encoder, metadata, **weights) -> QueryRetrievalBranch:
    w = RetrievalWeights(**weights)
    retriever = FaissRetriever.build(metadata, [str(i) for i in range(len(TEXTS))])
    return QueryRetrievalBranch(encoder.encode, metadata, retriever, w, n=3)


def test_an_llm_query_finds_the_matching_items_and_skips_the_history(encoder, metadata):
    b = branch(encoder, metadata, last=0.0, llm=1.0)
    out = b.search([EMPTY], [["space battles and science fiction"]])
    assert out.ids[0, 0] == 0 and out.ids.shape == (1, 3)
    again = b.search([np.array([0])], [["space battles and science fiction"]])
    assert 0 not in again.ids[0] and again.ids[0, 0] == 3  # Alien is the next sci-fi film
    assert np.all(np.diff(out.scores[0]) <= 1e-6)


def test_the_last_item_alone_is_content_retrieval_by_its_vector(encoder, metadata):
    b = branch(encoder, metadata)  # the default weights: the last item's vector
    out = b.search([np.array([2, 0])], rows="full")  # last item: Star Wars
    np.testing.assert_allclose(out.full[0, [1, 3, 4]], metadata[[1, 3, 4]] @ metadata[0], rtol=1e-5)
    assert out.ids[0, 0] == 3 and np.isneginf(out.full[0, [0, 2]]).all()


def test_full_rows_agree_with_search_and_mask_history(encoder, metadata):
    b = branch(encoder, metadata, last=1.0, recent=0.5, llm=0.7)
    args = ([np.array([4, 2, 1])], [["funny animated film for kids", "family comedy"]])
    out, top = b.search(*args, rows="full"), b.search(*args)
    assert out.full.shape == (1, len(TEXTS)) and np.isneginf(out.full[0, [1, 2, 4]]).all()
    np.testing.assert_array_equal(out.ids, top.ids)
    np.testing.assert_allclose(out.full[0, top.ids[0]], top.scores[0], rtol=1e-5)


def test_query_vector_is_the_weighted_sum_of_its_parts(encoder, metadata):
    b = branch(encoder, metadata, last=1.0, recent=0.5, llm=2.0)
    hist, texts = [np.array([3, 1, 4, 0])], [["dark crime", "quiet drama"]]
    q = b.query_vectors(hist, texts)[0]
    # recent: the three before the last, nearest first, decayed 1, 0.5, 0.25
    recent = (metadata[4] + 0.5 * metadata[1] + 0.25 * metadata[3]) / 1.75
    llm = mean_direction(encoder.encode(texts[0]))
    np.testing.assert_allclose(q, metadata[0] + 0.5 * recent + 2.0 * llm, atol=1e-5)
    last, rec = history_parts(metadata, hist)
    np.testing.assert_allclose(rec[0], recent, atol=1e-6)
    np.testing.assert_allclose(last[0], metadata[0])
    # the LLM texts are not even encoded when their weight is 0
    calls = []
    quiet = QueryRetrievalBranch(lambda t: calls.append(t) or encoder.encode(t), metadata, b.retriever,
                                 RetrievalWeights(), n=3)  # fmt: skip
    quiet.search(hist, texts)
    assert calls == []


def test_an_intent_is_blended_and_stands_alone_without_history(encoder, metadata):
    b = branch(encoder, metadata)
    iv = encoder.encode(["a film about a pig on a farm"])[0]
    q = b.query_vectors([np.array([0]), EMPTY], None, ["a film about a pig on a farm"] * 2)
    np.testing.assert_allclose(q[0], 0.5 * metadata[0] + 0.5 * iv, atol=1e-5)
    np.testing.assert_allclose(q[1], iv, atol=1e-6)  # no history: the intent alone
    assert b.search([EMPTY], None, ["a film about a pig on a farm"]).ids[0, 0] == 4  # Babe


def test_intents_go_to_their_own_encoder(encoder, metadata):
    seen: dict[str, list[str]] = {"query": [], "intent": []}

    def spy(kind):
        def encode(texts):
            seen[kind] += texts
            return encoder.encode(texts)

        return encode

    retriever = FaissRetriever.build(metadata, [str(i) for i in range(len(TEXTS))])
    b = QueryRetrievalBranch(spy("query"), metadata, retriever, RetrievalWeights(last=1.0, llm=1.0), n=3,
                             encode_intent=spy("intent"))  # fmt: skip
    b.query_vectors([np.array([0])], [["space battles"]], ["a pig on a farm"])
    assert seen == {"query": ["space battles"], "intent": ["a pig on a farm"]}


def test_item_vectors_mix_in_the_description_and_weights_are_checked(metadata):
    desc = metadata[::-1].copy()
    v = item_vectors(metadata, desc, 0.5)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(v[0], (metadata[0] + 0.5 * desc[0]) / np.linalg.norm(metadata[0] + 0.5 * desc[0]),
                               rtol=1e-5)  # fmt: skip
    assert item_vectors(metadata, None, 0.0) is not None
    with pytest.raises(ValueError, match="needs the description vectors"):
        item_vectors(metadata, None, 0.5)
    with pytest.raises(ValueError, match="retrieval weight recent must be a finite number >= 0"):
        RetrievalWeights(recent=-0.1)
    with pytest.raises(ValueError, match=r"unknown retrieval weight\(s\) \['lastitem'\]"):
        RetrievalWeights.from_dict({"lastitem": 1})
    assert RetrievalWeights(llm=0.2).uses_llm and not RetrievalWeights().uses_llm
    parts = QueryParts.build(metadata, [np.array([1])])
    assert np.count_nonzero(parts.llm) == 0 and np.count_nonzero(parts.recent) == 0
