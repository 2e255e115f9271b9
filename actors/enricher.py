"""Catalog enrichment: one LLM call per item, validated, retried once, else a metadata-only fallback."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.llm.engine import Generation, LLMEngine, SamplingConfig
from actors.llm.retry import generate_with_retry
from actors.prompts import ItemPrompt, ItemRecord, OutputRules, fallback_description, validate


@dataclass
class Enrichment:
    item_id: str
    description: str
    source: str  # "llm" or "fallback"
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    rejected: str = ""  # why the last rejected output was rejected ("" if none)


# Small models rarely end the line themselves: they loop on keywords until the token cap (40.2 completion
# tokens per item at a cap of 40), and what comes after the first seven or so repeats them ("family movies,
# family films, ..."). 24 tokens keep ~7 keywords (the part cut mid-keyword is dropped) at 60% of the decode.
ENRICH_MAX_TOKENS = 24


@dataclass
class EnrichmentSettings:
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(
            max_tokens=ENRICH_MAX_TOKENS, temperature=0.0, repetition_penalty=1.1, stop=["\n"]
        )
    )
    retry_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(
            max_tokens=ENRICH_MAX_TOKENS, temperature=0.7, top_p=0.9, repetition_penalty=1.1, stop=["\n"]
        )
    )
    prompt: ItemPrompt = field(default_factory=ItemPrompt)
    rules: OutputRules = field(default_factory=OutputRules)


class CatalogEnricher:
    """Writes a feature-enriched description for a batch of items.

    Invalid outputs are retried once with sampling; a second failure gives a metadata-only description
    (``source="fallback"``). Every result says how many attempts and tokens it took.
    """

    def __init__(self, engine: LLMEngine, settings: EnrichmentSettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or EnrichmentSettings()

    def enrich(self, items: list[ItemRecord]) -> list[Enrichment]:
        s = self.settings

        def check(i: int, gen: Generation, sampling: SamplingConfig) -> tuple[str, str | None]:
            raw = gen.text
            if gen.completion_tokens >= sampling.max_tokens and "," in raw:
                raw = raw[: raw.rfind(",")]  # cut off mid-keyword by the token limit: drop the fragment
            return validate(raw, items[i], s.rules)

        convs = [s.prompt.conversation(it) for it in items]
        runs = generate_with_retry(self.engine, convs, (s.sampling, s.retry_sampling), check)
        return [
            Enrichment(
                it.item_id, r.text, "llm", r.attempts, r.prompt_tokens, r.completion_tokens, r.rejected
            )
            if r.text is not None
            else Enrichment(
                it.item_id,
                fallback_description(it),
                "fallback",
                r.attempts,
                r.prompt_tokens,
                r.completion_tokens,
                r.rejected,
            )  # fmt: skip
            for it, r in zip(items, runs, strict=True)
        ]
