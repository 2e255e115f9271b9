"""Collaborative-filtering models behind one batch-first interface (see ``actors.cf.base``)."""

from __future__ import annotations

from actors.cf.als import ALS
from actors.cf.base import CFModel, ValidationSet
from actors.cf.ease import EASE
from actors.cf.popularity import Popularity
from actors.cf.sasrec import SASRec

MODELS: dict[str, type[CFModel]] = {m.name: m for m in (Popularity, EASE, SASRec, ALS)}


def model_class(name: str) -> type[CFModel]:
    """The model class registered under ``name`` (pop, ease, sasrec, als)."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown CF model {name!r}; choose from {sorted(MODELS)}") from None


__all__ = ["ALS", "CFModel", "EASE", "MODELS", "Popularity", "SASRec", "ValidationSet", "model_class"]
