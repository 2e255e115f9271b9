"""The canonical dataset schema, and the checks every loader applies before writing it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pandas as pd

log = logging.getLogger(__name__)

INTERACTION_COLUMNS = ("user_id", "item_id", "timestamp")
ITEM_REQUIRED = ("item_id", "title")
ITEM_OPTIONAL = ("year", "genres", "categories", "brand", "description")


class DataError(ValueError):
    """Input data that cannot be used. The message names the file and the column."""


@dataclass
class DropReport:
    """What a loader dropped, and why. Nothing is dropped without an entry here."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, n: int) -> None:
        if n:
            self.counts[reason] = self.counts.get(reason, 0) + int(n)
            log.warning("dropped %d rows: %s", n, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict[str, int]:
        return dict(self.counts)


@dataclass
class RawDataset:
    """A dataset in the canonical schema: string ids, int64 timestamps, interactions in source order."""

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    dropped: DropReport
    reviews: pd.DataFrame | None = None  # user_id, item_id, timestamp, review (datasets with review text)
    notes: dict[str, int] = field(default_factory=dict)


def require_columns(df: pd.DataFrame, columns: tuple[str, ...] | list[str], source: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing}; found {list(df.columns)}")


def require_rows(df: pd.DataFrame, source: str) -> None:
    if len(df) == 0:
        raise DataError(f"{source}: file is empty (no data rows)")


def parse_timestamps(values: pd.Series, source: str, column: str = "timestamp") -> pd.Series:
    """Integer seconds since the epoch. Accepts integers, numeric strings and ISO dates.

    Raises DataError naming the file, the column and the first bad values.
    """
    if pd.api.types.is_integer_dtype(values):
        return values.astype("int64")
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        if (numeric != numeric.round()).any():
            return numeric.round().astype("int64")
        return numeric.astype("int64")
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna() & numeric.isna()
    if bad.any():
        examples = values[bad].astype(str).head(3).tolist()
        raise DataError(
            f"{source}: column '{column}' has {int(bad.sum())} unparsable timestamp(s), e.g. {examples}"
        )
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.where(numeric.isna(), numeric).astype("int64")


def to_id_strings(values: pd.Series, source: str, column: str) -> pd.Series:
    """Ids as strings; integer-valued floats (pandas' NaN upcast) lose their '.0'. Empty ids are errors."""
    if values.isna().any():
        raise DataError(f"{source}: column '{column}' has {int(values.isna().sum())} empty id(s)")
    if pd.api.types.is_float_dtype(values) and (values == values.round()).all():
        values = values.astype("int64")
    out = values.astype(str).str.strip()
    if (out == "").any():
        raise DataError(f"{source}: column '{column}' has {int((out == '').sum())} empty id(s)")
    return out


def finalize(
    name: str,
    interactions: pd.DataFrame,
    items: pd.DataFrame,
    interactions_source: str,
    items_source: str,
    dropped: DropReport | None = None,
) -> RawDataset:
    """Validate both tables and bring them into the canonical schema.

    Checks, in order: required columns, non-empty, ids, timestamps; then drops exact duplicate
    interactions and interactions whose item is not in the catalog, counting both in the report.
    Duplicate item ids in the catalog keep their first row (also counted).
    """
    dropped = dropped or DropReport()
    require_columns(interactions, INTERACTION_COLUMNS, interactions_source)
    require_columns(items, ITEM_REQUIRED, items_source)
    require_rows(interactions, interactions_source)
    require_rows(items, items_source)

    inter = pd.DataFrame(
        {
            "user_id": to_id_strings(interactions["user_id"], interactions_source, "user_id"),
            "item_id": to_id_strings(interactions["item_id"], interactions_source, "item_id"),
            "timestamp": parse_timestamps(interactions["timestamp"], interactions_source),
        }
    )
    keep_item_cols = [c for c in (*ITEM_REQUIRED, *ITEM_OPTIONAL) if c in items.columns]
    cat = items[keep_item_cols].copy()
    cat["item_id"] = to_id_strings(cat["item_id"], items_source, "item_id")
    cat["title"] = cat["title"].fillna("").astype(str).str.strip()
    for col in keep_item_cols[2:]:
        if col == "year":
            cat[col] = pd.to_numeric(cat[col], errors="coerce").astype("Int64")
        else:
            cat[col] = cat[col].fillna("").astype(str).str.strip()

    dup_items = cat["item_id"].duplicated()
    dropped.add(f"{items_source}: duplicate item_id rows (first kept)", int(dup_items.sum()))
    cat = cat[~dup_items]

    dup = inter.duplicated()
    dropped.add(f"{interactions_source}: exact duplicate (user_id, item_id, timestamp) rows", int(dup.sum()))
    inter = inter[~dup]

    unknown = ~inter["item_id"].isin(cat["item_id"])
    if unknown.any():
        examples = inter.loc[unknown, "item_id"].unique()[:5].tolist()
        dropped.add(
            f"{interactions_source}: column 'item_id' points at items missing from {items_source} "
            f"(e.g. {examples})",
            int(unknown.sum()),
        )
        inter = inter[~unknown]
    if len(inter) == 0:
        raise DataError(f"{interactions_source}: no interactions left after dropping {dropped.counts}")
    return RawDataset(name, inter.reset_index(drop=True), cat.reset_index(drop=True), dropped)
