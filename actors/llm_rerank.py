"""The serial architecture's LLM step: an LLM reranks a short candidate list (CF's top-K) zero-shot.

This is what the parallel design is measured against (the LLMRank / LlamaRec family): the LLM sees only the
candidates CF chose. Two ways to ask, since a small model follows list formats badly:

- ``listwise``: the history and the numbered candidates in one prompt, the answer a ranking: the candidates
  it names (by number, or by title when it writes titles), in its order, then the ones it left out in the
  given order. The given order matters
  to an LLM (position bias): ``position_bias`` compares the rankings of one candidate list given in its
  order and reversed.
- ``pointwise``: the log-probability of each candidate's title as the answer to "what next?" after the
  history (``LLMEngine.score``), per token; candidates ranked by it.

Batch-first, framework-free: histories and candidate lists of ``HistoryItem`` in, orders (positions into
each candidate list) out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from actors.llm.engine import LLMEngine, SamplingConfig
from actors.user_query import HistoryItem

RerankMode = Literal["listwise", "pointwise"]
MODES: tuple[RerankMode, ...] = ("listwise", "pointwise")
NOUNS = {"movie": ("movies", "watched", "watch"), "product": ("products", "bought", "buy"),
         "item": ("items", "liked", "like")}  # fmt: skip
_NUMBER = re.compile(r"\d+")
_NUMBERS_ONLY = re.compile(r"[\s\d,;.>\[\]()-]*")


@dataclass
class RerankSettings:
    history: int = 10  # most recent history items shown
    max_tokens: int | None = (
        None  # listwise answer length; None: 3 tokens per candidate + 8 (K numbers, commas)
    )
    description_words: int = 0  # words of an item's enriched description shown (0: none)
    max_words: int = 24  # words of each listed item (long product titles and category paths fit the context)

    def __post_init__(self) -> None:
        if self.history < 1:
            raise ValueError(f"history must be >= 1, got {self.history}")
        if self.max_words < 1:
            raise ValueError(f"max_words must be >= 1, got {self.max_words}")


@dataclass
class Reranked:
    """Per user: ``order`` (positions into the candidate list, best first) and how it was obtained."""

    orders: list[list[int]]
    named: list[int]  # listwise: distinct valid numbers the answer named (pointwise: every candidate)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    texts: list[str] = field(default_factory=list)


def _title(item: HistoryItem) -> str:
    return f"{item.title} ({item.year})" if item.year else item.title


class LLMReranker:
    """Zero-shot reranking of candidate lists by an ``LLMEngine``; ``domain`` (``movie``, ``product``,
    ``item``) only picks the nouns of the prompts."""

    def __init__(
        self, engine: LLMEngine, domain: str = "movie", settings: RerankSettings | None = None
    ) -> None:
        self.engine = engine
        self.settings = settings or RerankSettings()
        self.nouns = NOUNS.get(domain, NOUNS["item"])

    def _line(self, item: HistoryItem) -> str:
        return " ".join(item.line(self.settings.description_words).split()[: self.settings.max_words])

    def _history(self, history: Sequence[HistoryItem]) -> str:
        shown = history[-self.settings.history :]
        return "\n".join(f"- {self._line(h)}" for h in shown) or "- (nothing yet)"

    def listwise_conversation(
        self, history: Sequence[HistoryItem], candidates: Sequence[HistoryItem]
    ) -> list[dict]:
        plural, past, verb = self.nouns
        system = (f"You rank candidate {plural} for a user. Given the {plural} the user {past} (oldest first) and "
                  f"numbered candidates, answer with the candidate numbers, from the most to the least likely to "
                  f"be the next one they {verb}, separated by commas: all of them, nothing else.")  # fmt: skip
        listed = "\n".join(f"[{i + 1}] {self._line(c)}" for i, c in enumerate(candidates))
        user = f"The user {past}:\n{self._history(history)}\n\nCandidates:\n{listed}\n\nRanking:"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def pointwise_conversation(self, history: Sequence[HistoryItem]) -> list[dict]:
        plural, past, verb = self.nouns
        system = f"You predict the next of the {plural} a user will {verb}. Answer with its title only."
        user = f"The user {past}:\n{self._history(history)}\n\nThe next one:"
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def listwise(self, histories: Sequence[Sequence[HistoryItem]],
                 candidates: Sequence[Sequence[HistoryItem]]) -> Reranked:  # fmt: skip
        """One greedy generation per user; its numbers parsed into an order (``parse_order``)."""
        convs = [self.listwise_conversation(h, c) for h, c in zip(histories, candidates, strict=True)]
        k = max((len(c) for c in candidates), default=0)
        budget = self.settings.max_tokens or 3 * k + 8
        gens = self.engine.generate(convs, SamplingConfig(max_tokens=budget, stop=[]))
        parsed = [parse_order(g.text, c) for g, c in zip(gens, candidates, strict=True)]
        return Reranked([o for o, _ in parsed], [n for _, n in parsed], sum(g.prompt_tokens for g in gens),
                        sum(g.completion_tokens for g in gens), [g.text for g in gens])  # fmt: skip

    def pointwise(self, histories: Sequence[Sequence[HistoryItem]],
                  candidates: Sequence[Sequence[HistoryItem]]) -> Reranked:  # fmt: skip
        """Every candidate's title scored after its user's history; ties keep the given order."""
        convs, conts = [], []
        for h, cands in zip(histories, candidates, strict=True):
            conv = self.pointwise_conversation(h)
            convs += [conv] * len(cands)
            conts += [_title(c) for c in cands]
        scores = self.engine.score(convs, conts)
        orders, start = [], 0
        for cands in candidates:
            s = np.array([c.mean for c in scores[start : start + len(cands)]])
            orders.append(np.argsort(-s, kind="stable").tolist())
            start += len(cands)
        tokens = sum(c.tokens for c in scores)
        return Reranked(orders, [len(c) for c in candidates], prompt_tokens=tokens)

    def rerank(self, mode: RerankMode, histories, candidates) -> Reranked:
        if mode not in MODES:
            raise ValueError(f"rerank mode must be one of {MODES}, got {mode!r}")
        return (
            self.listwise(histories, candidates)
            if mode == "listwise"
            else self.pointwise(histories, candidates)
        )


def parse_order(text: str, candidates: Sequence[HistoryItem]) -> tuple[list[int], int]:
    """(order, named): the candidates the answer names, in the order it first names them, then every other
    candidate in the given order; ``named`` counts the distinct candidates named. An answer of numbers only
    ("3, 1, 2") names candidates by number; any other answer by ``[n]`` or by title (small models tend to
    write a numbered list of titles, whose list numbers are not candidate numbers)."""
    k = len(candidates)
    first: dict[int, int] = {}
    if _NUMBERS_ONLY.fullmatch(text):
        for m in _NUMBER.finditer(text):
            i = int(m.group()) - 1
            if 0 <= i < k:
                first.setdefault(i, m.start())
    else:
        low = text.lower()
        for i, c in enumerate(candidates):
            hits = [
                p for p in (low.find(f"[{i + 1}]"), low.find(c.title.lower()) if c.title else -1) if p >= 0
            ]
            if hits:
                first[i] = min(hits)
    named = sorted(first, key=lambda i: (first[i], i))
    return named + [i for i in range(k) if i not in first], len(named)


def kendall_tau(a: Sequence[int], b: Sequence[int]) -> float:
    """Kendall's τ between two orders of the same items (1: the same order, -1: reversed)."""
    pos = {item: i for i, item in enumerate(b)}
    rb = np.array([pos[item] for item in a])
    n = len(rb)
    if n < 2:
        return 1.0
    upper = np.triu_indices(n, 1)
    sign = np.sign(rb[None, :] - rb[:, None])[upper]
    return float(sign.sum() / len(sign))


def position_bias(given: Sequence[Sequence[int]], from_reversed: Sequence[Sequence[int]]) -> dict[str, float]:
    """How much the answer depends on the order the candidates were shown in: ``given`` ranks each list shown
    as it is, ``from_reversed`` the same list shown reversed, both as positions in the list as it is. Returns
    the mean Kendall τ between the two rankings (1: no position bias) and the share of users whose top-1 is
    the same both ways."""
    taus = [kendall_tau(g, r) for g, r in zip(given, from_reversed, strict=True)]
    same_top = [g[0] == r[0] for g, r in zip(given, from_reversed, strict=True)]
    return {"kendall_tau": float(np.mean(taus)), "top1_same": float(np.mean(same_top)), "users": len(taus)}
