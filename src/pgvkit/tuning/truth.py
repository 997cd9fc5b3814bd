"""Step 2: the truth. Exact k nearest neighbours in numpy (BLAS, chunked), and recall@k
measured against them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["GroundTruth", "exact_knn", "recall_at_k", "recall_low", "MARGIN_SE"]


# A recommendation must clear the target by this many standard errors of its mean recall: queries
# near the same cluster succeed or fail together, so a few hundred of them are a smaller sample
# than they look (with 1.96 a 20k-row sweep picked ef_search = 10 at 0.977 that scored 0.947 on
# fresh queries).
MARGIN_SE = 3.0


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
    query's own id (`exclude`) left out of its results."""
    ids = np.arange(len(vectors)) if ids is None else np.asarray(ids)
    base = _normalise(vectors)
    q = _normalise(queries)
    if exclude is not None:
        order = np.argsort(ids)
        slots = np.clip(np.searchsorted(ids, exclude, sorter=order), 0, len(ids) - 1)
        positions = order[slots]
        present = ids[positions] == exclude  # a query's own row may be outside a filtered base
    out_ids = np.empty((len(q), k), dtype=ids.dtype)
    out_d = np.empty((len(q), k), dtype=np.float64)
    for lo in range(0, len(q), chunk):
        sims = q[lo:lo + chunk] @ base.T
        if exclude is not None:
            rows_ = np.flatnonzero(present[lo:lo + chunk])
            sims[rows_, positions[lo:lo + chunk][rows_]] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order_k = np.argsort(-top_sims, axis=1, kind="stable")
        top = np.take_along_axis(top, order_k, axis=1)
        out_ids[lo:lo + chunk] = ids[top]
        out_d[lo:lo + chunk] = 1.0 - np.take_along_axis(top_sims, order_k, axis=1)
    return GroundTruth(out_ids, out_d)


def recall_at_k(truth: GroundTruth, found_ids: Sequence[Sequence[int]],
                found_distances: Sequence[Sequence[float]] | None = None,
                tolerance: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """Per query: plain recall (|found ∩ true| / k), and recall counting a found neighbour as
    right when its distance ties the k-th true distance within `tolerance` (equidistant points
    are equally correct answers)."""
    k = truth.ids.shape[1]
    plain = np.array([len(set(map(int, f[:k])) & set(map(int, t))) / k for f, t in zip(found_ids, truth.ids)])
    if found_distances is None:
        return plain, plain
    tolerant = np.array([
        min(k, sum(1 for d in fd[:k] if d <= kth + tolerance)) / k
        for fd, kth in zip(found_distances, truth.distances[:, -1])])
    return plain, np.maximum(plain, tolerant)


def recall_low(per_query: np.ndarray) -> float:
    """Mean recall less MARGIN_SE standard errors: what a choice must clear to hold on queries
    nobody measured."""
    return float(per_query.mean()) - MARGIN_SE * float(per_query.std(ddof=1)) / math.sqrt(len(per_query))
