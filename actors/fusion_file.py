"""``fusion.json``, and every other record of a tuned fusion, read and written through one typed model.

A tuned fusion is a ``FusionConfig`` and the ``RetrievalWeights`` it was tuned with (``TunedFusion``): what a
search's best trial, each method's best, a selection candidate and ``fusion.json`` all hold. ``FusionFile``
adds the provenance ``tune.search`` writes beside them (which CF model, which candidate was selected and why,
the validation metrics, the search's budget). Reading one checks everything: an unknown key, a ``method``
outside its choices or a value out of range is an error that names the key (and the file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from actors.rerank import FusionConfig
from actors.retrieval_query import RetrievalWeights


class FusionFileError(ValueError):
    """A ``fusion.json`` (or a record of a tuned fusion) that cannot be used: each bad key and why."""


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()
    )


class TunedFusion(BaseModel):
    """A fusion config and the retrieval weights it goes with."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: FusionConfig
    weights: RetrievalWeights = RetrievalWeights()

    @classmethod
    def of(cls, record: dict[str, Any], where: str = "fusion") -> TunedFusion:
        """The ``config`` and ``weights`` of a record that holds more (a search's result, a selection's
        candidate, ``fusion.json``), checked; ``where`` names the record in the error."""
        try:
            return cls.model_validate({k: record[k] for k in ("config", "weights") if k in record})
        except ValidationError as exc:
            raise FusionFileError(f"{where}: {_problems(exc)}") from None


class FusionFile(TunedFusion):
    """``fusion.json``: the selected fusion and retrieval weights, and where they came from."""

    cf: str | None = None  # the CF model the fusion was tuned with
    selected: str | None = None  # the selected candidate's name (its search, then its method)
    valid: dict[str, float] = {}  # the selected config's validation metrics
    best: dict[str, Any] | None = None  # the best candidate on validation (``config``, ``weights``, metrics)
    selection: list[dict[str, Any]] = []  # every candidate the one-standard-error rule compared
    tuned_weights: list[str] = []  # the retrieval weights searched
    trials: int | None = None  # over every search behind the selection
    seconds: float | None = None
    objective: list[str] | None = None  # the metrics the search maximised
    methods: list[str] | None = None
    source: str | None = Field(None, exclude=True)  # where it was read from (not written)

    @classmethod
    def load(cls, path: Path) -> FusionFile:
        """The file at ``path``, checked (``FusionFileError`` names the file and each bad key)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise FusionFileError(f"{path}: not JSON: {exc}") from None
        try:
            out = cls.model_validate(data)
        except ValidationError as exc:
            raise FusionFileError(f"{path}: {_problems(exc)}") from None
        if out.best is not None:
            TunedFusion.of(out.best, f"{path}: best")
        return out

    def save(self, path: Path) -> None:
        """Write atomically (temp file + rename): a crash never leaves half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
        tmp.replace(path)
