"""The report's experiment matrix: which rows it evaluates, and with what.

- ``pop``, ``ease``, ``sasrec`` (``als`` when asked for): CF alone, full ranking (those of the CF models asked
  for: ``--models``);
- ``retrieval_lastitem``: the last history item's metadata vector as the query, no LLM (full ranking,
  exact cosine); ``retrieval_query``: the LLM queries alone (over the branch's top-200);
- for each backbone B in ``sasrec``, ``ease``, ``als`` (those among the models), the fused rows that answer
  "does the LLM help here?": ``fused_B_nollm`` (no LLM text anywhere: the last item and the items before
  it), ``fused_B_enrich`` (+ the enriched descriptions on the item side), ``fused_B_query`` (+ the LLM
  queries) and ``fused_B_llm`` (both). Each searches its retrieval weights (every range from 0) with the fusion on
  validation; the final config is chosen by the one-standard-error rule (``tune.selection``) among its own
  candidates and those of its simpler rows, and applied unchanged to test;
- for each backbone B and K in ``SERIAL_KS``, ``serial_B_retrieval_kK``: the serial architecture the
  parallel design is measured against. CF's top-K is reordered by the same fusion of CF and retrieval
  scores, searched on validation with the same retrieval weights as the widest fused row, but only CF's K
  candidates can be answered (``FusionConfig.cf_candidates``): the same signals confined to CF's list, so
  its distance to ``fused_B_<use>`` measures the information bottleneck alone.
"""

from __future__ import annotations

from dataclasses import dataclass

CF_MODELS = ("pop", "ease", "sasrec", "als")  # every CF model (actors.cf.MODELS, without importing torch)
DEFAULT_MODELS = ("pop", "ease", "sasrec")  # the report's CF rows unless --models names others
BACKBONES = ("sasrec", "ease", "als")
METHODS = ("fixed", "adaptive", "rrf")
SERIAL_KS = (20, 50)  # CF list lengths of the serial rows


@dataclass(frozen=True)
class LLMUse:
    """Which parts a fused row may use: the retrieval weights it searches (the others stay 0, ``last`` 1).
    Its selection also weighs the rows without some of its LLM parts (``tune.search.choose``)."""

    name: str
    tuned: tuple[str, ...]

    @property
    def needs(self) -> tuple[str, ...]:
        """Its LLM inputs: ``llm`` (user queries), ``enriched`` (description vectors)."""
        return tuple(w for w in self.tuned if w in ("llm", "enriched"))


LLM_USES = (
    LLMUse("nollm", ("last", "recent")),
    LLMUse("enrich", ("last", "recent", "enriched")),
    LLMUse("query", ("last", "recent", "llm")),
    LLMUse("llm", ("last", "recent", "llm", "enriched")),
)


@dataclass(frozen=True)
class FusedRow:
    """One fused row of the report: the CF backbone and the LLM parts it may use."""

    cf: str
    use: LLMUse

    @property
    def name(self) -> str:
        return f"fused_{self.cf}_{self.use.name}"


def backbones(models: tuple[str, ...] = DEFAULT_MODELS) -> tuple[str, ...]:
    """The fusion backbones among the CF ``models`` the report evaluates."""
    return tuple(cf for cf in BACKBONES if cf in models)


def fused_rows(available: tuple[str, ...], models: tuple[str, ...] = DEFAULT_MODELS) -> list[FusedRow]:
    """The fused rows whose LLM inputs are ``available`` (of ``llm``, ``enriched``), per backbone among
    ``models``."""
    return [
        FusedRow(cf, use) for cf in backbones(models) for use in LLM_USES if set(use.needs) <= set(available)
    ]


@dataclass(frozen=True)
class SerialRow:
    """One serial row: the backbone's top-``k`` reordered by the fusion, with the parts of ``use``."""

    cf: str
    k: int
    use: LLMUse

    @property
    def name(self) -> str:
        return f"serial_{self.cf}_retrieval_k{self.k}"

    @property
    def parallel(self) -> str:
        """The fused row with the same backbone and the same parts: what it is compared with."""
        return FusedRow(self.cf, self.use).name


def serial_rows(available: tuple[str, ...], models: tuple[str, ...] = DEFAULT_MODELS) -> list[SerialRow]:
    """The serial rows, per backbone among ``models`` and K, each with the widest LLM use whose inputs are
    ``available``."""
    widest = [use for use in LLM_USES if set(use.needs) <= set(available)][-1]
    return [SerialRow(cf, k, widest) for cf in backbones(models) for k in SERIAL_KS]
