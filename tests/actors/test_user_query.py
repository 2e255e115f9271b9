from __future__ import annotations

from actors.llm.engine import Generation, LLMEngine
from actors.user_query import HistoryItem, UserQueryWriter, history_items, history_key

HIST = [
    HistoryItem("Heat", 1995, "Action, Crime, Thriller", "tense, heist"),
    HistoryItem("Babe", 1995, "Children's, Comedy, Drama", "heartwarming, farm"),
    HistoryItem("Toy Story", 1995, "Animation, Children's, Comedy", "toys come alive"),
]


class Scripted(LLMEngine):
    def __init__(self, answers: list[list[str]]) -> None:
        self.answers = answers  # per call, one answer per conversation
        self.seen: list[list] = []

    def generate(self, conversations, sampling):
        self.seen.append(conversations)
        return [Generation(a, 50, 5) for a in self.answers.pop(0)]


def test_prompt_lists_recent_history_with_the_last_item_marked():
    conv = UserQueryWriter(None).conversation(HIST)
    last = conv[-1]["content"].splitlines()
    assert last[0] == "- Heat (1995): Action, Crime, Thriller; tense, heist"
    assert last[-1] == "- MOST RECENT: Toy Story (1995): Animation, Children's, Comedy; toys come alive"
    assert "Do not list titles" in conv[0]["content"]


def test_only_the_most_recent_items_are_shown():
    from actors.user_query import QuerySettings

    conv = UserQueryWriter(None, QuerySettings(recent=2)).conversation(HIST)
    assert "Heat" not in conv[-1]["content"] and "MOST RECENT: Toy Story" in conv[-1]["content"]


def test_retry_then_fallback_and_token_counts():
    engine = Scripted(
        [["warm family comedies with animals", "Heat, Babe and Toy Story again"], ["Heat and Babe"]]
    )
    out = UserQueryWriter(engine).write([HIST, HIST])
    assert (out[0].source, out[0].attempts, out[0].text) == ("llm", 1, "warm family comedies with animals")
    assert (out[1].source, out[1].rejected) == ("fallback", "lists titles")
    assert out[1].text == "Animation, Children's, Comedy, Action, Crime like Toy Story"
    assert out[1].prompt_tokens == 100  # both attempts counted
    assert len(engine.seen[1]) == 1  # only the failure is retried


def test_empty_history_and_no_engine_use_the_fallback():
    out = UserQueryWriter(None).write([HIST, []])
    assert [q.source for q in out] == ["fallback", "fallback"]
    assert out[1].text == "popular well-liked picks"


def test_history_key_depends_on_the_exact_history():
    assert history_key("u1", ["1", "2"]) == history_key("u1", ["1", "2"])
    assert history_key("u1", ["1", "2"]) != history_key("u1", ["2", "1"])
    assert history_key("u1", ["1"]) != history_key("u2", ["1"])


def test_history_items_from_catalog_rows():
    rows = [{"item_id": "7", "title": "X", "year": 1999, "genres": "Drama"}, {"item_id": "8", "title": "Y"}]
    items = history_items(rows, {"7": "moving"})
    assert items[0] == HistoryItem("X", 1999, "Drama", "moving")
    assert items[1] == HistoryItem("Y", None, "", "")


def test_ungrounded_queries_and_titles_with_years_are_rejected():
    engine = Scripted(
        [["space opera with lasers and robots", "The Clash (2003) is great", "animals on a farm"],
         ["galactic wizards and dragons", "comedies about toys"]]
    )  # fmt: skip
    out = UserQueryWriter(engine).write([HIST, HIST, HIST])
    assert [(q.source, q.rejected) for q in out] == [
        ("fallback", "ungrounded"),  # no word of it in the history's genres or descriptions, twice
        ("llm", "lists titles"),  # a title with its year, then a grounded retry ("comedies" ~ "Comedy")
        ("llm", ""),  # "farm" is in Babe's description
    ]
    assert out[1].text == "comedies about toys"


def test_several_queries_per_user_keep_the_valid_distinct_samples():
    from actors.user_query import QuerySettings

    class Sampled(Scripted):
        def generate(self, conversations, sampling):
            if sampling.n == 1:
                return super().generate(conversations, sampling)
            self.seen.append((sampling.n, sampling.temperature))
            # the greedy query again, a valid new one, an ungrounded one; the second history's all invalid
            return [Generation("x", 50, 15, ["warm family comedies with animals", "farm animal stories",
                                             "space lasers"]),
                    Generation("x", 50, 15, ["Heat and Babe", "Heat and Babe", "Heat and Babe"])]  # fmt: skip

    engine = Sampled([["warm family comedies with animals", "animated toys come alive"]])
    out = UserQueryWriter(engine, QuerySettings(samples=4)).write([HIST, HIST])
    assert engine.seen[-1] == (3, 0.8)  # one request for the three extra samples of every history
    assert out[0].texts == ["warm family comedies with animals", "farm animal stories"]
    assert out[1].texts == ["animated toys come alive"] and out[1].text == "animated toys come alive"
    assert out[0].prompt_tokens == 100 and out[0].completion_tokens == 20  # both requests counted
    assert UserQueryWriter(None, QuerySettings(samples=4)).write([HIST])[0].texts == [
        "Animation, Children's, Comedy, Action, Crime like Toy Story"
    ]
