"""Ranking primitives shared by every model and by the evaluation: masking, top-k, target rank.

Ordering everywhere: higher score first, ties to the lower item index.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import numpy as np


def _pairs(item_lists: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items): row i once for each item of ``item_lists[i]``, flattened."""
    lengths = np.fromiter((len(h) for h in item_lists), dtype=np.int64, count=len(item_lists))
    if not lengths.sum():
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows = np.repeat(np.arange(len(item_lists)), lengths)
    return rows, np.concatenate([np.asarray(h, dtype=np.int64) for h in item_lists])


def mask_items(scores: np.ndarray, item_lists: Sequence[np.ndarray]) -> np.ndarray:
    """Set row i's items ``item_lists[i]`` to -inf, in place. Returns ``scores``."""
    rows, items = _pairs(item_lists)
    scores[rows, items] = -np.inf
    return scores


# rows at least this long find their k best with torch.topk (6 to 9 times faster than numpy's argpartition
# on rows of a million items, measured on 2 cores); shorter ones with argpartition. Where torch is loaded
# already (importing it takes ~0.9 s), rows from TORCH_TOPK_LOADED_MIN_ITEMS on use it too: at 1,682 items
# it is 1.0x (k = 200, one thread) to 8.5x (k = 10, two threads) argpartition, at 16,384 7.6x to 13x
TORCH_TOPK_MIN_ITEMS = 65_536
TORCH_TOPK_LOADED_MIN_ITEMS = 1_024
# rows at least this long (with k at most a quarter of their chunks) rank only the chunks of CHUNK items
# whose maximum could reach the top k, found from ``chunk_maxima`` in one pass over the row
CHUNKED_TOPK_MIN_ITEMS = 65_536
CHUNK = 256
# rows at least this long count the items above a target in one pass per row, shorter ones in whole batches
ONE_PASS_MIN_ITEMS = 16_384


def chunk_maxima(scores: np.ndarray) -> np.ndarray:
    """(n_rows, ceil(n_items / CHUNK)) the maximum of each run of CHUNK items of each row (the last run
    shorter), NaN where the run holds a NaN: one pass over the rows."""
    return np.maximum.reduceat(scores, np.arange(0, scores.shape[1], CHUNK), axis=1)


def _k_best(scores: np.ndarray, k: int) -> np.ndarray:
    """(n_rows, k) indices of some k best items per row, in no order (ties at the k-th place unresolved)."""
    width = scores.shape[1]
    loaded = "torch" in sys.modules
    if scores.dtype in (np.float32, np.float64) and (
        width >= TORCH_TOPK_MIN_ITEMS or (loaded and width >= TORCH_TOPK_LOADED_MIN_ITEMS)
    ):
        import torch

        with warnings.catch_warnings():  # a read-only array (a memory map) is only read here
            warnings.simplefilter("ignore", UserWarning)
            rows = torch.from_numpy(np.ascontiguousarray(scores))
        return torch.topk(rows, k, dim=1, sorted=False).indices.numpy()
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def _select(scores: np.ndarray, k: int) -> np.ndarray:
    """``topk`` by a partial selection of the whole rows (k <= n_items)."""
    if k == scores.shape[1] or k > scores.shape[1] // 4:
        return np.argsort(-scores, axis=1, kind="stable")[:, :k]
    part = _k_best(scores, k)
    part_scores = np.take_along_axis(scores, part, axis=1)
    kth = part_scores.min(axis=1, keepdims=True)
    ties_total = (scores == kth).sum(axis=1)
    ties_kept = (part_scores == kth).sum(axis=1)
    # rank inside the k: by score descending, then by item index (a stable sort of the k in index order)
    part = np.sort(part, axis=1)
    part_scores = np.take_along_axis(scores, part, axis=1)
    out = np.take_along_axis(part, np.argsort(-part_scores, axis=1, kind="stable"), axis=1)
    straddle = np.flatnonzero(ties_total != ties_kept)
    for row in straddle:  # the candidates in index order, so the stable sort puts tied ones by index
        cand = np.flatnonzero(scores[row] >= kth[row, 0])
        out[row] = cand[np.argsort(-scores[row, cand], kind="stable")[:k]]
    return out


def _slots(n: int, rows: np.ndarray) -> tuple[np.ndarray, int]:
    """(each entry's place in its row, the most entries in a row) of entries sorted by row, ``n`` rows."""
    counts = np.bincount(rows, minlength=n)
    return np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts), int(counts.max())


def _chunked(
    scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None, maxima: np.ndarray
) -> np.ndarray:
    """``topk`` from the chunks that can hold a top-k item.

    Among the chunks without an excluded item, k have a maximum of at least the k-th largest (``bound``), so
    k items score at least ``bound``, and so does every top-k item (ties included): it lies in a chunk whose
    maximum reaches ``bound`` or in one holding an excluded item. The items of those chunks that score at
    least ``bound``, in index order, are ranked by ``_select``, whose ties then go to the lower item index.
    Rows whose k-th best score is shared by items in most chunks pick most chunks (correct, but slower).
    """
    n, m = scores.shape
    n_chunks = maxima.shape[1]
    rows, items = _pairs(exclude if exclude is not None else [])
    clean = maxima.copy()
    clean[rows, items // CHUNK] = -np.inf
    bound = np.partition(clean, n_chunks - k, axis=1)[:, n_chunks - k, None]
    picked = maxima >= bound
    picked[rows, items // CHUNK] = True
    # the items of each row's picked chunks in index order, padded with chunks past the end
    pick_row, pick_chunk = np.nonzero(picked)
    slot, width = _slots(n, pick_row)
    chunk_of = np.full((n, width), n_chunks, dtype=np.int64)
    chunk_of[pick_row, slot] = pick_chunk
    cand = (chunk_of[:, :, None] * CHUNK + np.arange(CHUNK)).reshape(n, -1)
    vals = np.take_along_axis(scores, np.minimum(cand, m - 1), axis=1)
    vals[cand >= m] = -np.inf
    if len(rows):  # an excluded item's place: its chunk's slot, found among the sorted (row, chunk) keys
        keys = (np.arange(n)[:, None] * (n_chunks + 1) + chunk_of).ravel()
        where = np.searchsorted(keys, rows * (n_chunks + 1) + items // CHUNK) - rows * width
        vals[rows, where * CHUNK + items % CHUNK] = -np.inf
    # those scoring at least the bound, still in index order (past-the-end ones last, scored -inf)
    keep_row, keep_at = np.nonzero(vals >= bound)
    slot, width = _slots(n, keep_row)
    top_vals = np.full((n, width), -np.inf, dtype=vals.dtype)
    top_ids = np.full((n, width), m, dtype=np.int64)
    top_vals[keep_row, slot] = vals[keep_row, keep_at]
    top_ids[keep_row, slot] = cand[keep_row, keep_at]
    return np.take_along_axis(top_ids, _select(top_vals, k), axis=1)


def topk(
    scores: np.ndarray,
    k: int,
    exclude: Sequence[np.ndarray] | None = None,
    maxima: np.ndarray | None = None,
) -> np.ndarray:
    """(n_rows, min(k, n_items)) item indices, best first.

    Always equals ``argsort(-scores, kind="stable")[:, :k]``; with ``exclude``, that of the rows after
    ``mask_items(scores, exclude)``, ``scores`` itself left as it is. Scores must not be NaN.

    Long float rows are ranked on the chunks that can hold a top-k item (``_chunked``; ``maxima``: their
    ``chunk_maxima`` when the caller has them already). Other rows: a partial selection finds the k best per
    row; in rows where a tie straddles the k-th place, the items scoring at least the k-th score are
    re-ranked with a stable sort.
    """
    n_items = scores.shape[1]
    k = min(k, n_items)
    if (
        n_items >= CHUNKED_TOPK_MIN_ITEMS
        and 0 < k <= n_items // (4 * CHUNK)
        and scores.dtype in (np.float32, np.float64)
    ):
        return _chunked(scores, k, exclude, chunk_maxima(scores) if maxima is None else maxima)
    if exclude is not None:
        scores = mask_items(np.array(scores, copy=True), exclude)
    return _select(scores, k)


def top_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, scores) of each row's top ``k``, best first (the ``topk`` ordering)."""
    top = topk(scores, k)
    return top, np.take_along_axis(scores, top, axis=1)


def target_ranks(
    scores: np.ndarray, targets: np.ndarray, exclude: Sequence[np.ndarray] | None = None
) -> np.ndarray:
    """1-based rank of each row's target item under the ``topk`` ordering; with ``exclude``, as after
    ``mask_items(scores, exclude)``, ``scores`` itself left as it is.

    An item before the target counts when it scores at least as high (a tie goes to the lower index), one
    after it when it scores higher. Long rows are read once each, the excluded items then taken out of the
    count (and put back where the target scores -inf too and the item is before it); short ones are
    masked in a copy and compared as a whole batch.
    """
    targets = np.asarray(targets, dtype=np.int64)
    if exclude is not None and scores.shape[1] < ONE_PASS_MIN_ITEMS:  # short rows: mask a copy
        scores, exclude = mask_items(np.array(scores, copy=True), exclude), None
    t_score = scores[np.arange(len(targets)), targets]
    if scores.shape[1] < ONE_PASS_MIN_ITEMS:  # passes over the whole batch beat a Python loop over its rows
        before, v = np.arange(scores.shape[1]) < targets[:, None], t_score[:, None]
        return 1 + np.where(before, scores >= v, scores > v).sum(axis=1)
    rows, items = _pairs(exclude if exclude is not None else [])
    t_score[rows[items == targets[rows]]] = -np.inf
    above = np.fromiter(
        (np.count_nonzero(row[:t] >= v) + np.count_nonzero(row[t + 1 :] > v)
         for row, t, v in zip(scores, targets, t_score, strict=True)),
        dtype=np.int64,
        count=len(targets),
    )  # fmt: skip
    if len(rows):
        n_items = scores.shape[1]
        pair = np.sort(rows * n_items + items)
        pair = pair[np.diff(pair, prepend=-1) != 0]  # an item listed twice is excluded once
        rows, items = pair // n_items, pair % n_items
        other = items != targets[rows]
        rows, items = rows[other], items[other]
        before, v, s = items < targets[rows], t_score[rows], scores[rows, items]
        counted = np.where(before, s >= v, s > v)
        np.add.at(above, rows, (before & (v == -np.inf)).astype(np.int64) - counted)
    return 1 + above


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-row NDCG@k for one target per row, from 1-based ranks."""
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean NDCG@k for one target per row, from 1-based ranks."""
    return float(ndcg_gains(ranks, k).mean())
