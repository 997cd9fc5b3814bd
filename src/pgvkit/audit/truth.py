"""Step 2: the truth. Exact k nearest neighbours in numpy (BLAS, chunked), and recall@k
measured against them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["GroundTruth", "exact_knn", "recall_at_k", "recall_low", "near_duplicates", "MARGIN_SE", "TIE_TOLERANCE",
           "NEAR_DUPLICATE", "NEAR_DUPLICATE_QUERIES"]


# A recommendation must clear the target by this many standard errors of its mean recall: queries
# near the same cluster succeed or fail together, so a few hundred of them are a smaller sample
# than they look (with 1.96 a 20k-row sweep picked ef_search = 10 at 0.977 that scored 0.947 on
# fresh queries).
MARGIN_SE = 3.0
# a query has a near-duplicate in the index when its nearest neighbour is closer than this share of
# its k-th neighbour's distance; tune warns when NEAR_DUPLICATE_QUERIES of its new-vector queries do.
# Rows taken out of a sample of 100,000: 2 % of 200 real sentence embeddings (of 228,895), 34 % of
# densified rows (bench/densify.py, of 1,000,000): a sample holds fewer near-duplicates than the table
NEAR_DUPLICATE = 0.3
NEAR_DUPLICATE_QUERIES = 0.1


@dataclass
class GroundTruth:
    ids: np.ndarray  # (q, k)
    distances: np.ndarray  # (q, k), cosine distance, ascending


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def exact_knn(vectors: np.ndarray, queries: np.ndarray, k: int, *, ids: np.ndarray | None = None,
              exclude: np.ndarray | None = None, chunk: int = 256) -> GroundTruth:
    """The exact k nearest neighbours by cosine distance: chunked matrix products (BLAS), each
    query's own id (`exclude`) left out of its results. Where fewer than k neighbours exist (a
    small table, a small owner) the missing places hold id -1 and distance inf."""
    ids = np.arange(len(vectors)) if ids is None else np.asarray(ids)
    base = _normalise(vectors)
    q = _normalise(queries)
    if exclude is not None and len(ids):
        order = np.argsort(ids)
        slots = np.clip(np.searchsorted(ids, exclude, sorter=order), 0, len(ids) - 1)
        positions = order[slots]
        present = ids[positions] == exclude  # a query's own row may be outside a filtered base
    take = min(k, len(ids))
    out_ids = np.full((len(q), k), -1, dtype=ids.dtype)
    out_d = np.full((len(q), k), np.inf, dtype=np.float64)
    for lo in range(0, len(q) if take else 0, chunk):
        sims = q[lo:lo + chunk] @ base.T
        if exclude is not None and len(ids):
            rows_ = np.flatnonzero(present[lo:lo + chunk])
            sims[rows_, positions[lo:lo + chunk][rows_]] = -np.inf
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order_k = np.argsort(-top_sims, axis=1, kind="stable")
        top = np.take_along_axis(top, order_k, axis=1)
        top_sims = np.take_along_axis(top_sims, order_k, axis=1)
        out_ids[lo:lo + chunk, :take] = np.where(np.isfinite(top_sims), ids[top], -1)
        out_d[lo:lo + chunk, :take] = 1.0 - top_sims  # an excluded row: -inf similarity, inf distance
    return GroundTruth(out_ids, out_d)


# Two distances this close are one: numpy's float32 products and pgvector's float arithmetic differ
# in the last digits, and copies of one image are at exactly the same distance from any query.
TIE_TOLERANCE = 1e-5


def recall_at_k(truth: GroundTruth, found_ids: Sequence[Sequence[int]],
                found_distances: Sequence[Sequence[float]] | None = None,
                tolerance: float = TIE_TOLERANCE) -> np.ndarray:
    """Recall@k of each search: the share of its true neighbours it returned. A returned row
    whose distance ties the k-th true distance (within `tolerance`) is as right as the row the
    truth happened to list (copies of one image are interchangeable), and the denominator is the
    neighbours that exist: min(k, rows), less the query's own row for similar assets. An exact
    search scores 1.0 on any data."""
    k = truth.ids.shape[1]
    out = np.empty(len(truth.ids))
    for i, (true_ids, true_d) in enumerate(zip(truth.ids, truth.distances)):
        exists = np.isfinite(true_d)
        want = int(exists.sum())
        if want == 0:
            out[i] = 1.0
            continue
        right = set(map(int, true_ids[exists]))
        kth = float(true_d[exists][-1])
        found = list(map(int, found_ids[i][:k]))
        dists = found_distances[i][:k] if found_distances is not None else [None] * len(found)
        hits = sum(1 for f, d in zip(found, dists) if f in right or (d is not None and d <= kth + tolerance))
        out[i] = min(hits, want) / want
    return out


def recall_low(per_query: np.ndarray) -> float:
    """Mean recall less MARGIN_SE standard errors: what a choice must clear to hold on queries
    nobody measured."""
    return float(per_query.mean()) - MARGIN_SE * float(per_query.std(ddof=1)) / math.sqrt(len(per_query))


def near_duplicates(truth: GroundTruth) -> float:
    """The share of queries whose nearest neighbour lies closer than NEAR_DUPLICATE of their k-th
    one's distance: a re-upload, a crop, a copy of the query in the index. Near 0 for new images."""
    d = np.asarray(truth.distances, dtype=np.float64)
    return float(np.mean(d[:, 0] < NEAR_DUPLICATE * d[:, -1]))
