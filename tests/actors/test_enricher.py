"""CatalogEnricher's retry and fallback logic, driven by a scripted engine (the real engines are tested in
test_llm_engines.py)."""

from __future__ import annotations

from actors.enricher import CatalogEnricher
from actors.llm.engine import Generation, LLMEngine, SamplingConfig
from actors.prompts import ItemRecord


class ScriptedEngine(LLMEngine):
    """Answers by the item title in the last message, one scripted answer per attempt."""

    def __init__(self, script: dict[str, list[str]]) -> None:
        self.script = script
        self.calls: list[int] = []

    def generate(self, conversations, sampling: SamplingConfig):
        self.calls.append(len(conversations))
        out = []
        for conv in conversations:
            title = conv[-1]["content"].split("\n")[0].removeprefix("Title: ")
            answer = self.script[title].pop(0)
            out.append(Generation(answer, prompt_tokens=10, completion_tokens=len(answer.split())))
        return out


def test_valid_retry_and_fallback_paths_are_counted():
    items = [ItemRecord("a", "Alpha", 1990, "Drama"), ItemRecord("b", "Beta", 1991, "Comedy"),
             ItemRecord("c", "Gamma", 1992, "Horror")]  # fmt: skip
    engine = ScriptedEngine({
        "Alpha": ["moving, family story, tearjerker"],
        "Beta": ["", "light, witty, feel-good, date night"],
        "Gamma": ["I am sorry, I cannot", "Title: Gamma, Year: 1992, Genres: Horror"],
    })  # fmt: skip
    out = CatalogEnricher(engine).enrich(items)
    assert engine.calls == [3, 2]  # the retry only re-asks the failures
    assert [(e.item_id, e.source, e.attempts) for e in out] == [
        ("a", "llm", 1),
        ("b", "llm", 2),
        ("c", "fallback", 2),
    ]
    assert out[1].rejected == "empty" and out[2].rejected == "echoes the prompt format"
    assert out[2].description == "Horror, 1992"
    assert out[2].prompt_tokens == 20  # both attempts are counted


def test_output_cut_by_the_token_limit_loses_its_last_fragment():
    engine = ScriptedEngine({"Alpha": ["tense, gritty, heist, cat-and-mou"]})

    class Limited(ScriptedEngine):
        def generate(self, conversations, sampling):
            gens = super().generate(conversations, sampling)
            for g in gens:
                g.completion_tokens = sampling.max_tokens
            return gens

    limited = Limited(engine.script)
    out = CatalogEnricher(limited).enrich([ItemRecord("a", "Alpha", 1990, "Action")])
    assert out[0].description == "tense, gritty, heist"
