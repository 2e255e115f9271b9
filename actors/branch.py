"""``BranchOutput``: the one result type of a branch (CF or retrieval) for a batch of users.

A branch always gives its top-N ``ids`` and ``scores`` (n_users, N), best first, masked items never
listed. What the fusion needs about the rest of the catalog comes in one of three ``RowMode``s:

- ``full``: the score of every catalog item (``full``, (n_users, n_items), -inf where masked). The
  fusion normalises over the whole row and gives an item missing from the top-N its true score.
- ``stats``: only the full row's normalisation statistics (``stats``: mean, std, min, max over the
  unmasked items). The fusion normalises with them; an item missing from the top-N sits just below the
  branch's N-th item. A few numbers per user, whatever the catalog size.
- ``topn``: neither. The statistics come from the top-N list itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np

from actors.ranking import top_scores

RowMode = Literal["full", "stats", "topn"]
ROW_MODES: tuple[RowMode, ...] = ("full", "stats", "topn")
# above this a float32 row per user, branch and request (80 KB here) is too much to ship
FULL_ROWS_MAX_ITEMS = 20_000


def default_row_mode(n_items: int) -> RowMode:
    """Full rows for catalogs up to ``FULL_ROWS_MAX_ITEMS``, top-N lists only above: measured by
    ``bench/fusion_modes.py``, full rows are worth the most to EASE, and the statistics alone no more than
    the lists alone."""
    return "full" if n_items <= FULL_ROWS_MAX_ITEMS else "topn"


@dataclass(frozen=True)
class RowStats:
    """Per-user statistics of a score row over its finite entries, each (n_users,) float64."""

    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray

    @classmethod
    def of(cls, rows: np.ndarray) -> RowStats:
        """Statistics of score rows (n_users, n), ignoring -inf (masked) entries."""
        rows = np.asarray(rows)
        r = np.array(rows, dtype=np.float64)  # a copy, worked on in place: one pass less per step
        masked = ~np.isfinite(r)
        cnt = np.maximum(r.shape[1] - masked.sum(axis=1), 1)
        r[masked] = 0.0
        mean = r.sum(axis=1) / cnt
        r -= mean[:, None]
        r[masked] = 0.0
        std = np.sqrt(np.square(r, out=r).sum(axis=1) / cnt)
        lo = np.where(masked, np.inf, rows).min(axis=1, initial=np.inf).astype(np.float64)
        hi = np.where(masked, -np.inf, rows).max(axis=1, initial=-np.inf).astype(np.float64)
        return cls(mean, std, lo, hi)

    def take(self, rows: np.ndarray | slice) -> RowStats:
        return RowStats(*(getattr(self, f.name)[rows] for f in fields(self)))

    def normalise(self, scores: np.ndarray, how: str) -> np.ndarray:
        """z-score or min-max of ``scores`` (n_users, m) with these statistics."""
        s = np.asarray(scores, dtype=np.float64)
        if how == "zscore":
            sd = np.where(self.std > 0, self.std, 1.0)
            return (s - self.mean[:, None]) / sd[:, None]
        if how == "minmax":
            span = self.max - self.min
            return (s - self.min[:, None]) / np.where(span > 0, span, 1.0)[:, None]
        raise ValueError(f"norm must be 'zscore' or 'minmax', got {how!r}")


@dataclass(frozen=True)
class BranchOutput:
    """One branch's answer for a batch of users: top-N (ids, scores) plus, by ``mode``, the full rows or
    their statistics. Arrays only, so it crosses Ray and Serve boundaries as it is."""

    ids: np.ndarray  # (n_users, N) int64 item indices, best first
    scores: np.ndarray  # (n_users, N) float32
    full: np.ndarray | None = None  # (n_users, n_items) float32, -inf where masked (mode "full")
    stats: RowStats | None = None  # statistics of the full row (mode "stats")

    def __post_init__(self) -> None:
        if self.ids.shape != self.scores.shape or self.ids.ndim != 2:
            raise ValueError(
                f"ids {self.ids.shape} and scores {self.scores.shape} must be equal (n_users, N)"
            )
        if self.full is not None and len(self.full) != len(self.ids):
            raise ValueError(f"full has {len(self.full)} rows for {len(self.ids)} users")

    @classmethod
    def from_rows(cls, rows: np.ndarray, n: int, mode: RowMode = "full") -> BranchOutput:
        """Top-``n`` of masked score rows (n_users, n_items; -inf = masked, never listed), with the rows
        themselves or their statistics as ``mode`` says."""
        rows = np.asarray(rows, dtype=np.float32)
        ids, scores = top_scores(rows, n)
        listed = np.isfinite(scores).all(axis=0)  # a column where some user has run out of items
        if not listed.all():
            cut = int(np.argmin(listed))
            ids, scores = ids[:, :cut], scores[:, :cut]
        return cls(ids.astype(np.int64), scores, None, None).with_rows(mode, rows)

    @classmethod
    def empty(cls, n_users: int) -> BranchOutput:
        return cls(np.zeros((n_users, 0), dtype=np.int64), np.zeros((n_users, 0), dtype=np.float32))

    @property
    def mode(self) -> RowMode:
        return "full" if self.full is not None else "stats" if self.stats is not None else "topn"

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n(self) -> int:
        return self.ids.shape[1]

    def with_rows(self, mode: RowMode, rows: np.ndarray | None = None) -> BranchOutput:
        """The same top-N in another mode. Going to ``full`` or ``stats`` needs the full rows (given here,
        or held by this output); going down (full → stats → topn) needs nothing."""
        if mode not in ROW_MODES:
            raise ValueError(f"row mode must be one of {ROW_MODES}, got {mode!r}")
        rows = self.full if rows is None else rows
        if mode == "topn":
            return BranchOutput(self.ids, self.scores)
        if mode == "stats" and rows is None and self.stats is not None:
            return BranchOutput(self.ids, self.scores, None, self.stats)
        if rows is None:
            raise ValueError(
                f"mode {mode!r} needs the full score rows, and this output has mode {self.mode!r}"
            )
        if mode == "full":
            return BranchOutput(self.ids, self.scores, np.asarray(rows, dtype=np.float32))
        return BranchOutput(self.ids, self.scores, None, RowStats.of(rows))

    def take(self, users: np.ndarray | slice) -> BranchOutput:
        """The rows of ``users`` (indices or a slice)."""
        return BranchOutput(
            self.ids[users],
            self.scores[users],
            None if self.full is None else self.full[users],
            None if self.stats is None else self.stats.take(users),
        )

    def widened(self, n_items: int) -> BranchOutput:
        """The same output over a catalog of ``n_items``: full rows padded with -inf for the items past the
        branch's own catalog (items it does not know: never listed, absent from its row)."""
        if self.full is None or self.full.shape[1] >= n_items:
            return self
        pad = np.full((len(self.full), n_items - self.full.shape[1]), -np.inf, dtype=np.float32)
        return BranchOutput(self.ids, self.scores, np.concatenate([self.full, pad], axis=1), self.stats)

    def head(self, n: int) -> BranchOutput:
        """The top ``n`` of each list (the rows or statistics unchanged)."""
        return BranchOutput(self.ids[:, :n], self.scores[:, :n], self.full, self.stats)

    def row_stats(self) -> RowStats:
        """Normalisation statistics: the given ones, else of the full rows, else of the top-N lists. (Both are
        given where ``full`` holds only part of a row: ``tune.candidates``' rows over a user's candidates.)"""
        if self.stats is not None:
            return self.stats
        if self.full is not None:
            return RowStats.of(self.full)
        return RowStats.of(self.scores)

    @classmethod
    def concat(cls, parts: Sequence[BranchOutput]) -> BranchOutput:
        """Stack outputs of the same mode and list length user-wise (batches of one branch)."""
        if not parts:
            raise ValueError("concat needs at least one BranchOutput")
        modes = {p.mode for p in parts}
        if len(modes) > 1 or len({p.n for p in parts}) > 1:
            raise ValueError(f"concat needs one mode and one N, got modes {modes}, N {[p.n for p in parts]}")
        stats = None
        if parts[0].stats is not None:
            stats = RowStats(*(np.concatenate([getattr(p.stats, f.name) for p in parts])
                               for f in fields(RowStats)))  # fmt: skip
        full = None if parts[0].full is None else np.concatenate([p.full for p in parts])
        return cls(
            np.concatenate([p.ids for p in parts]), np.concatenate([p.scores for p in parts]), full, stats
        )

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Flat ``{prefix_name: array}`` for ``np.savez``; ``from_arrays`` reads it back."""
        out = {f"{prefix}_ids": self.ids, f"{prefix}_scores": self.scores}
        if self.full is not None:
            out[f"{prefix}_full"] = self.full
        if self.stats is not None:
            out |= {f"{prefix}_stats_{f.name}": getattr(self.stats, f.name) for f in fields(RowStats)}
        return out

    @classmethod
    def from_arrays(cls, arrays, prefix: str) -> BranchOutput:
        keys = set(arrays.keys())  # a dict or an open .npz
        stats = None
        if f"{prefix}_stats_mean" in keys:
            stats = RowStats(*(np.asarray(arrays[f"{prefix}_stats_{f.name}"]) for f in fields(RowStats)))
        full = np.asarray(arrays[f"{prefix}_full"]) if f"{prefix}_full" in keys else None
        return cls(np.asarray(arrays[f"{prefix}_ids"]), np.asarray(arrays[f"{prefix}_scores"]), full, stats)
