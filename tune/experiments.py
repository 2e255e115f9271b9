"""The report's experiment matrix: which rows it evaluates, and with what.

- ``pop``, ``ease``, ``sasrec``: CF alone, full ranking;
- ``retrieval_lastitem``: the last history item's text as the query, no LLM (full ranking, exact cosine);
- ``retrieval_query``: the LLM query alone, zero-shot; ``retrieval_query_lastitem``: the LLM query followed
  by the last item's metadata text (both over the branch's top-200);
- ``fused_fixed`` (best fixed α), ``fused_adaptive`` (tuned per-user α_u, SASRec backbone),
  ``fused_adaptive_ease`` (EASE backbone); ablations ``fused_adaptive_noenrich`` (metadata-only item
  text) and ``fused_adaptive_noquery`` / ``fused_adaptive_ease_noquery`` (last item's text instead of the
  LLM query), ``fused_adaptive_ease_noenrich_noquery`` (no LLM at all: EASE + the last item's metadata text).
"""

from __future__ import annotations

from dataclasses import dataclass

CF_MODELS = ("pop", "ease", "sasrec")
QUERY_ROWS = {"llm": "retrieval_query", "llm+lastitem": "retrieval_query_lastitem"}  # query mode -> row


@dataclass(frozen=True)
class FusedMethod:
    """One fused row of the report: the CF backbone, the retrieval query, the item text and the methods searched."""

    name: str
    cf: str
    retrieval: str  # llm | llm+lastitem | lastitem
    variant: str  # enriched | metadata
    methods: tuple[str, ...]


def fused_methods(query_mode: str, variant: str) -> list[FusedMethod]:
    return [
        FusedMethod("fused_fixed", "sasrec", query_mode, variant, ("fixed",)),
        FusedMethod("fused_adaptive", "sasrec", query_mode, variant, ("adaptive",)),
        FusedMethod("fused_adaptive_ease", "ease", query_mode, variant, ("adaptive",)),
        FusedMethod("fused_adaptive_noenrich", "sasrec", query_mode, "metadata", ("adaptive",)),
        FusedMethod("fused_adaptive_noquery", "sasrec", "lastitem", variant, ("adaptive",)),
        FusedMethod("fused_adaptive_ease_noquery", "ease", "lastitem", variant, ("adaptive",)),
        # no LLM at all: the setup of the independent calibration (EASE + metadata text of the last item)
        FusedMethod("fused_adaptive_ease_noenrich_noquery", "ease", "lastitem", "metadata", ("adaptive",)),
    ]
