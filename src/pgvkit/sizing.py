"""How much memory a vector index build needs (pgvector 0.8's build code), so builds can be
sized before they run and the doctor can warn before a rebuild fails."""

from __future__ import annotations

__all__ = ["ROWS_PER_LIST", "ivfflat_build_bytes", "hnsw_build_bytes", "mb"]

ROWS_PER_LIST = 50  # pgvector's k-means samples 50 rows per list


def _item_bytes(dims: int) -> int:
    return 8 + 4 * dims  # varlena header + dim/unused + float4 per dimension


def ivfflat_build_bytes(lists: int, dims: int, rows: int | None = None, max_samples: int | None = None) -> int:
    """What an IVFFlat build holds for k-means, as pgvector 0.8 computes it before refusing with
    "memory required is N MB": room for max(lists * 50, 10000) sample vectors (at most what the
    heap's pages can hold), the centers, and the bounds of each sampled row against each center."""
    room = max(lists * ROWS_PER_LIST, 10_000)
    if max_samples is not None:
        room = max(1, min(room, max_samples))
    sampled = room if rows is None else min(room, rows)
    item = _item_bytes(dims)
    return (room * item + 3 * lists * item + sampled * lists * 4 + 2 * sampled * 4
            + lists * lists * 4 + 3 * lists * 4)


def hnsw_build_bytes(rows: int, dims: int, m: int = 16) -> int:
    """Memory for an HNSW graph built in memory: each element, its vector and its neighbour
    lists, about rows * (4 * dims + 8) * 1.3 at m = 16 (more neighbours at larger m); beyond
    maintenance_work_mem the build falls back to a much slower on-disk path."""
    return int(rows * (_item_bytes(dims) * 1.3 + max(m - 16, 0) * 2 * 8))


def mb(n: int) -> str:
    """Bytes as whole megabytes, rounded up ("32 MB")."""
    return f"{-(-n // (1024 * 1024))} MB"
