"""Choosing the final fusion config: the one-standard-error rule over a paired bootstrap of validation users.

The best config on validation is partly the best by chance: a richer config (an adaptive α, an LLM part
with a weight) has more ways to fit the validation users' noise, and the last report showed it (adaptive α
won on valid and lost on test). So among the candidates (the best config of each fusion method in each of
the searches that may be used) the rule takes the **simplest** one whose validation NDCG@10 is within one
bootstrap standard error of the best's (the paired difference, users resampled). Simpler means fewer of the
LLM's parts in use (a weight above 0), then the fusion method: fixed α, then reciprocal-rank fusion, then
adaptive α. Both the best and the selected config are reported.

Where the catalog has items CF never saw in training, each candidate also comes as a variant in which CF
defers entirely to retrieval on them (``FusionConfig.unseen = 1``, name ``…+cold``), and among otherwise equal
configs that variant counts as simpler: only it can recommend an item no one has interacted with yet (a cold
or newly added item), and the rule takes it whenever validation cannot tell it from the best.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from actors.fusion_file import TunedFusion
from actors.rerank import FusionConfig
from actors.retrieval_query import RetrievalWeights
from tune.branches import BranchScores, fused_lists, ranked_lists
from tune.metrics import DEFAULT_KS, MetricContext, ndcg_gains, paired_bootstrap

METHOD_ORDER = {"fixed": 0, "rrf": 1, "adaptive": 2}


@dataclass(frozen=True)
class Candidate:
    """One config that may be chosen: where it came from (``source``: the search's row), the fusion and the
    retrieval weights."""

    source: str
    config: FusionConfig
    weights: RetrievalWeights

    cold: bool = False  # the variant of a searched config in which CF defers to retrieval on unseen items

    @property
    def name(self) -> str:
        return f"{self.source}/{self.config.method}{'+cold' if self.cold else ''}"

    @property
    def complexity(self) -> tuple[int, int, int]:
        """(LLM parts in use, method rank, 0 if CF defers entirely on unseen items else 1): lower is simpler."""
        llm = int(self.weights.llm > 0) + int(self.weights.enriched > 0)
        return (llm, METHOD_ORDER[self.config.method], int(self.config.unseen < 1.0))

    def deferring(self) -> Candidate:
        """The same config with CF deferring entirely to retrieval on the items it never saw."""
        return replace(self, config=replace(self.config, unseen=1.0), cold=True)

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "config": asdict(self.config), "weights": asdict(self.weights)}


def candidates(source: str, search: dict[str, Any]) -> list[Candidate]:
    """The best config of each method of one search (``tune.search.run_search``'s ``by_method``)."""
    tuned = [TunedFusion.of(b, f"{source} search") for b in search["by_method"].values()]
    return [Candidate(source, t.config, t.weights) for t in tuned]


def target_ranks(b: BranchScores, c: Candidate, ctx: MetricContext) -> np.ndarray:
    """Each user's rank of the target in the candidate's fused list (``n_items + 1``: outside it)."""
    b = b.with_weights(c.weights)
    ids, _ = fused_lists(b, c.config, max(DEFAULT_KS))
    return ranked_lists(ids, b.targets, b.history_len, ctx.n_items).ranks


def select(pool: Sequence[Candidate], valid: BranchScores, ctx: MetricContext) -> dict[str, Any]:
    """The one-standard-error choice among ``pool`` on the validation branches: ``{"best", "selected"}``
    (each a candidate with its validation NDCG@10) and the table of every candidate against the best."""
    if not pool:
        raise ValueError("select needs at least one candidate")
    if valid.unseen is not None and valid.unseen.any():
        pool = [*pool, *(c.deferring() for c in pool if c.config.unseen < 1.0)]
    ranks = {c.name: target_ranks(valid, c, ctx) for c in pool}
    ndcg = {name: float(ndcg_gains(r, 10).mean()) for name, r in ranks.items()}
    best = max(pool, key=lambda c: (ndcg[c.name], [-x for x in c.complexity]))
    table = []
    for c in sorted(pool, key=lambda c: (c.complexity, -ndcg[c.name])):
        pb = paired_bootstrap(ranks[best.name], ranks[c.name])
        table.append({"candidate": c.name, "complexity": list(c.complexity), "valid_ndcg10": round(ndcg[c.name], 5),
                      "below_best": round(pb["diff"], 5), "se": round(pb["se"], 5),
                      "within_one_se": bool(pb["diff"] <= pb["se"])})  # fmt: skip
    within = {t["candidate"] for t in table if t["within_one_se"]}  # the best itself always is
    chosen = next(c for c in sorted(pool, key=lambda c: (c.complexity, -ndcg[c.name])) if c.name in within)
    return {
        "best": best.as_dict() | {"name": best.name, "valid_ndcg10": ndcg[best.name]},
        "selected": chosen.as_dict() | {"name": chosen.name, "valid_ndcg10": ndcg[chosen.name]},
        "table": table,
    }


LLM_PARTS = {"llm": "query", "enriched": "enrich"}  # retrieval weight -> the report's name for its use


def use_name(tuned: tuple[str, ...]) -> str:
    """The report's name for the LLM parts among ``tuned``: nollm, enrich, query or llm (both)."""
    parts = [w for w in ("llm", "enriched") if w in tuned]
    return "nollm" if not parts else LLM_PARTS[parts[0]] if len(parts) == 1 else "llm"
