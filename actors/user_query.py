"""Personalized user queries: the LLM reads a user's recent history and writes what they want next.

The prompt lists the most recent items (title, year, genres/categories and the enriched description), oldest
first, with the last one marked. Outputs are cleaned and validated like item descriptions, retried once
with sampling, and otherwise replaced by a query built from the history's metadata. The target item is
never in the prompt: callers pass the history *before* the item being predicted.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from actors.llm.engine import Generation, LLMEngine, SamplingConfig
from actors.llm.retry import generate_with_retry
from actors.prompts import ItemRecord, OutputRules, validate_query_text, vocabulary

QUERY_SYSTEM = {
    "movie": (
        "You help a movie recommender. From the movies a user watched (oldest first, the most recent marked), "
        "write one short search query for the kind of movie they want to watch next: genres, mood, themes, "
        "audience. Weigh the most recent movie most. Do not list titles. Answer with the query only."
    ),
    "product": (
        "You help a shop recommender. From the products a user bought (oldest first, the most recent marked), "
        "write one short search query for what they are likely to want next: product type, use, style. "
        "Weigh the most recent product most. Do not list product names. Answer with the query only."
    ),
    "item": (
        "You help a recommender. From the items a user liked (oldest first, the most recent marked), write one "
        "short search query for what they want next. Do not list titles. Answer with the query only."
    ),
}

QUERY_EXAMPLE = {
    "movie": (
        ["Heat (1995): Action, Crime, Thriller; tense, heist", "Se7en (1995): Crime, Thriller; dark, murder mystery",
         "MOST RECENT: Fargo (1996): Crime, Drama, Thriller; dark humor, kidnapping"],
        "dark crime thrillers with twisted plots and dark humor",
    ),
    "product": (
        ["Face Cleanser: Beauty, Skin Care", "MOST RECENT: Night Cream: Beauty, Skin Care, Moisturizers"],
        "gentle skincare for dry skin, moisturizing serum or eye cream",
    ),
    "item": (["Heat (1995): Action, Crime", "MOST RECENT: Fargo (1996): Crime, Drama"], "dark crime stories"),
}  # fmt: skip


@dataclass
class HistoryItem:
    """What the query prompt shows of one history item."""

    title: str
    year: int | None = None
    tags: str = ""  # genres or categories
    description: str = ""  # the enriched description, if any

    def line(self, max_description_words: int = 8) -> str:
        head = f"{self.title} ({self.year})" if self.year else self.title
        parts = [p for p in (self.tags, " ".join(self.description.split()[:max_description_words])) if p]
        return f"{head}: {'; '.join(parts)}" if parts else head


@dataclass
class UserQuery:
    text: str  # the query: the greedy one, or the fallback
    source: str  # "llm" or "fallback" (of ``text``)
    attempts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    rejected: str = ""
    texts: list[str] = field(default_factory=list)  # ``text`` and the valid extra samples, distinct

    def __post_init__(self) -> None:
        if not self.texts:
            self.texts = [self.text]


@dataclass
class QuerySettings:
    domain: str = "movie"
    recent: int = 5  # history items shown, most recent last
    sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(max_tokens=32, temperature=0.0, repetition_penalty=1.1)
    )
    retry_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(
            max_tokens=32, temperature=0.7, top_p=0.9, repetition_penalty=1.1
        )
    )
    rules: OutputRules = field(default_factory=lambda: OutputRules(min_words=3, max_words=40))
    samples: int = 1  # queries per user: the greedy one and samples - 1 sampled ones (one request, n of them)
    extra_sampling: SamplingConfig = field(
        default_factory=lambda: SamplingConfig(
            max_tokens=32, temperature=0.8, top_p=0.95, repetition_penalty=1.1
        )
    )

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples (queries per user) must be >= 1, got {self.samples}")


def history_key(user_id: str, history_item_ids: Sequence[str]) -> str:
    """Cache key of a query: the user and a hash of exactly the history it was written from."""
    digest = hashlib.sha256("\x1f".join(map(str, history_item_ids)).encode()).hexdigest()[:16]
    return f"{user_id}:{digest}"


class UserQueryWriter:
    """Writes queries per history, batch-first: ``write(histories) -> [UserQuery]``. One greedy query each
    (retried with sampling, else the metadata fallback); with ``samples`` > 1, one more request per history
    asks for ``samples - 1`` sampled queries at once (vLLM's ``n``: one prefill of the prompt), and the
    valid, distinct ones join the query's ``texts``."""

    def __init__(self, engine: LLMEngine | None, settings: QuerySettings | None = None) -> None:
        self.engine = engine
        self.settings = settings or QuerySettings()

    def conversation(self, history: Sequence[HistoryItem]) -> list[dict[str, str]]:
        s = self.settings
        recent = list(history)[-s.recent :]
        lines = [f"- {h.line()}" for h in recent[:-1]]
        if recent:
            lines.append(f"- MOST RECENT: {recent[-1].line()}")
        example_lines, example_answer = QUERY_EXAMPLE[s.domain]
        return [
            {"role": "system", "content": QUERY_SYSTEM[s.domain]},
            {"role": "user", "content": "\n".join(f"- {x}" for x in example_lines)},
            {"role": "assistant", "content": example_answer},
            {"role": "user", "content": "\n".join(lines)},
        ]

    def fallback(self, history: Sequence[HistoryItem]) -> str:
        """A query from metadata alone: the history's most common tags, led by the last item's."""
        recent = list(history)[-self.settings.recent :]
        if not recent:
            return "popular well-liked picks"
        counts = Counter(t.strip() for h in recent for t in h.tags.split(",") if t.strip())
        last_tags = [t.strip() for t in recent[-1].tags.split(",") if t.strip()]
        ordered = list(dict.fromkeys(last_tags + [t for t, _ in counts.most_common(5)]))
        like = recent[-1].title
        return f"{', '.join(ordered[:5])} like {like}" if ordered else f"more like {like}"

    def write(self, histories: Sequence[Sequence[HistoryItem]]) -> list[UserQuery]:
        """One validated query per history (its items oldest first), in order: the LLM's, or the metadata
        fallback where the LLM's failed validation twice, the history is empty, or there is no engine."""
        if self.engine is None:
            return [UserQuery(self.fallback(h), "fallback", 0) for h in histories]
        s = self.settings
        asked = [i for i, h in enumerate(histories) if len(h)]

        def check(j: int, gen: Generation, sampling: SamplingConfig) -> tuple[str, str | None]:
            shown = list(histories[asked[j]])[-s.recent :]
            grounds = vocabulary([f"{h.tags} {h.description}" for h in shown])
            return validate_query_text(gen.text, [h.title for h in shown], s.rules, grounds)

        convs = [self.conversation(histories[i]) for i in asked]
        runs = dict(zip(asked, generate_with_retry(self.engine, convs, (s.sampling, s.retry_sampling), check),
                        strict=True))  # fmt: skip
        out = []
        for i, history in enumerate(histories):
            r = runs.get(i)
            if r is None:
                out.append(UserQuery(self.fallback([]), "fallback", 0, rejected="empty history"))
            elif r.text is not None:
                out.append(
                    UserQuery(r.text, "llm", r.attempts, r.prompt_tokens, r.completion_tokens, r.rejected)
                )
            else:
                out.append(UserQuery(self.fallback(history), "fallback", r.attempts, r.prompt_tokens,
                                     r.completion_tokens, r.rejected))  # fmt: skip
        if s.samples > 1 and convs:
            extra = replace(s.extra_sampling, n=s.samples - 1)
            for j, gen in enumerate(self.engine.generate(convs, extra)):
                q = out[asked[j]]
                q.prompt_tokens += gen.prompt_tokens
                q.completion_tokens += gen.completion_tokens
                for t in gen.texts:
                    text, reason = check(j, Generation(t), extra)
                    if reason is None and text not in q.texts:
                        q.texts.append(text)
        return out


def history_items(
    item_rows: Sequence[Mapping], descriptions: Mapping[str, str] | None = None
) -> list[HistoryItem]:
    """HistoryItems from catalog rows (``item_id, title, year, genres|categories``) + optional descriptions."""
    descriptions = descriptions or {}
    records = (ItemRecord.from_mapping(r) for r in item_rows)
    return [
        HistoryItem(r.title, r.year, r.genres or r.categories, descriptions.get(r.item_id, ""))
        for r in records
    ]
