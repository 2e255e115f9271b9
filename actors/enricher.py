"""Catalog enrichment: one LLM call per item, validated, retried once, else a metadata-only fallback."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.llm.engine import LLMEngine, SamplingConfig
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


@dataclass
class EnrichmentSettings:
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(
            max_tokens=40, temperature=0.0, repetition_penalty=1.1, stop=["\n"]
        )
    )
    retry_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(
            max_tokens=40, temperature=0.7, top_p=0.9, repetition_penalty=1.1, stop=["\n"]
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
        convs = [s.prompt.conversation(it) for it in items]
        results: list[Enrichment | None] = [None] * len(items)
        pending = list(range(len(items)))
        tokens = {i: [0, 0] for i in pending}
        reasons: dict[int, str] = {}
        for attempt, sampling in enumerate((s.sampling, s.retry_sampling), start=1):
            if not pending:
                break
            gens = self.engine.generate([convs[i] for i in pending], sampling)
            still = []
            for i, gen in zip(pending, gens, strict=True):
                tokens[i][0] += gen.prompt_tokens
                tokens[i][1] += gen.completion_tokens
                raw = gen.text
                if gen.completion_tokens >= sampling.max_tokens and "," in raw:
                    raw = raw[: raw.rfind(",")]  # cut off mid-keyword by the token limit: drop the fragment
                text, reason = validate(raw, items[i], s.rules)
                if reason is None:
                    results[i] = Enrichment(
                        items[i].item_id, text, "llm", attempt, *tokens[i], reasons.get(i, "")
                    )
                else:
                    reasons[i] = reason
                    still.append(i)
            pending = still
        for i in pending:
            results[i] = Enrichment(items[i].item_id, fallback_description(items[i]), "fallback", 2, *tokens[i],
                                    reasons[i])  # fmt: skip
        return results  # type: ignore[return-value]
