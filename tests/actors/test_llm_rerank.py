"""The serial architecture's LLM reranker: answer parsing, position bias, and both modes on the real
packaged model (transformers) for a few users."""

from __future__ import annotations

import pytest

from actors.llm.engine import EngineConfig
from actors.llm_rerank import LLMReranker, RerankSettings, kendall_tau, parse_order, position_bias
from actors.user_query import HistoryItem


def test_parse_order_reads_numbers_or_titles_then_the_given_order():
    c = [
        HistoryItem("Heat", 1995),
        HistoryItem("Fargo", 1996),
        HistoryItem("Se7en", 1995),
        HistoryItem("Clue"),
    ]
    assert parse_order("3, 1, 2", c) == ([2, 0, 1, 3], 3)
    assert parse_order("[2] > [2] > 9 > 0 > 4", c) == ([1, 3, 0, 2], 2)  # repeats and out-of-range ignored
    # a numbered list of titles: the list numbers are not candidate numbers
    assert parse_order("1. Se7en (1995)\n2. Heat (1995)\n3. Casino (1995)", c) == ([2, 0, 1, 3], 2)
    assert parse_order("I think the best is [4], then fargo", c) == ([3, 1, 0, 2], 2)
    assert parse_order("I cannot say", c) == ([0, 1, 2, 3], 0)


def test_kendall_tau_and_position_bias_known_answers():
    assert kendall_tau([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert kendall_tau([0, 1, 2, 3], [3, 2, 1, 0]) == -1.0
    assert kendall_tau([0, 1, 2], [1, 0, 2]) == pytest.approx(1 / 3)
    # user 1 ranks the same both ways; user 2 follows the shown order, so its ranking flips when reversed
    bias = position_bias([[0, 1, 2], [0, 1, 2]], [[0, 1, 2], [2, 1, 0]])
    assert bias == {"kendall_tau": 0.0, "top1_same": 0.5, "users": 2}


HISTORY = [HistoryItem("Star Wars", 1977, "Action, Adventure, Sci-Fi"),
           HistoryItem("The Empire Strikes Back", 1980, "Action, Adventure, Sci-Fi")]  # fmt: skip
CANDIDATES = [HistoryItem("Return of the Jedi", 1983, "Action, Adventure, Sci-Fi"),
              HistoryItem("Sense and Sensibility", 1995, "Drama, Romance"),
              HistoryItem("Toy Story", 1995, "Animation, Children's, Comedy")]  # fmt: skip


@pytest.fixture(scope="module")
def reranker():
    from actors.llm.factory import make_engine
    from actors.llm.packaged import default_llm_dir

    return LLMReranker(
        make_engine(EngineConfig(backend="transformers", model=str(default_llm_dir()))), "movie"
    )


def test_the_prompts_show_history_and_candidates_and_never_more_than_asked():
    r = LLMReranker(None, "product")
    conv = r.listwise_conversation(HISTORY * 10, CANDIDATES)
    user = conv[1]["content"]
    assert "products" in conv[0]["content"] and user.count("\n- ") == 10  # the 10 most recent of 20
    assert "[1] Return of the Jedi (1983): Action, Adventure, Sci-Fi" in user and "[3] Toy Story" in user
    assert "Toy Story" not in r.pointwise_conversation(HISTORY)[1]["content"]  # pointwise: no candidates
    # a long product line is cut to max_words words, so 20 candidates and 10 items fit a 2,048-token context
    long = HistoryItem("Heat Shrink Tubing " + "extra " * 40, tags="Industrial & Scientific " * 10)
    short = LLMReranker(None, "product", RerankSettings(max_words=6)).listwise_conversation([long], [long])
    assert "- Heat Shrink Tubing extra extra extra\n" in short[1]["content"]
    assert "[1] Heat Shrink Tubing extra extra extra\n" in short[1]["content"]
    with pytest.raises(ValueError, match="max_words must be >= 1"):
        RerankSettings(max_words=0)


def test_listwise_and_pointwise_on_the_packaged_model(reranker):
    lw = reranker.rerank("listwise", [HISTORY, HISTORY], [CANDIDATES, CANDIDATES[::-1]])
    assert all(sorted(o) == [0, 1, 2] for o in lw.orders) and lw.prompt_tokens > 100 and len(lw.texts) == 2
    assert all(0 <= n <= 3 for n in lw.named)
    pw = reranker.rerank("pointwise", [HISTORY], [CANDIDATES])
    assert sorted(pw.orders[0]) == [0, 1, 2] and pw.named == [3]
    assert pw.orders[0][0] == 0  # after two Star Wars films, the third one is the likeliest title
    with pytest.raises(ValueError, match="rerank mode"):
        reranker.rerank("pairwise", [HISTORY], [CANDIDATES])
