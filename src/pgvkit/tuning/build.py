"""Step 3: the builds. Each candidate index (IVFFlat or HNSW, cosine; on the vectors, on their
halfvec cast or on their binary quantization) built on the scratch table with maintenance_work_mem
sized so it fits and parallel workers on, its progress shown from pg_stat_progress_create_index."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from ..kinds import KINDS, Kind
from ..server.buildprogress import watch
from ..server.db import is_local
from ..sizing import hnsw_build_bytes, ivfflat_build_bytes
from .workload import SCHEMA, SCRATCH

__all__ = ["SEARCH_PARAM", "Config", "build", "build_settings", "spare_memory"]


SEARCH_PARAM = {"ivfflat": "ivfflat.probes", "hnsw": "hnsw.ef_search"}


@dataclass(frozen=True)
class Config:
    method: str  # ivfflat / hnsw
    params: tuple[tuple[str, int], ...]  # (("lists", 100),) or (("m", 16), ("ef_construction", 64))
    kind_name: str = "vector"  # vector / halfvec / binary (pgvkit.kinds)

    @property
    def kind(self) -> Kind:
        return KINDS[self.kind_name]

    @property
    def label(self) -> str:
        prefix = "" if self.kind_name == "vector" else self.kind_name + " "
        return prefix + f"{self.method}(" + ", ".join(f"{k}={v}" for k, v in self.params) + ")"

    @property
    def index_name(self) -> str:
        prefix = "" if self.kind_name == "vector" else self.kind_name + "_"
        return "tune_" + prefix + self.method + "_" + "_".join(f"{k}{v}" for k, v in self.params)

    def with_clause(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.SQL(k), sql.Literal(v)) for k, v in self.params)

    def build_bytes(self, rows: int, dims: int) -> int:
        p = dict(self.params)
        weight = max(1, round(self.kind.embedding_dims(dims)))  # a halfvec weighs half a vector
        if self.method == "ivfflat":
            return ivfflat_build_bytes(p["lists"], weight, rows)
        return hnsw_build_bytes(rows, weight, p.get("m", 16))


def spare_memory(url: str) -> int:
    """Bytes a build may take: half the available memory of a server on this machine, else 1 GB."""
    if is_local(url):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
        except OSError:
            pass
    return 1 << 30


def build_settings(url: str, config: Config, rows: int, dims: int) -> dict:
    """maintenance_work_mem sized so the build fits (estimate x 1.3, within what the server can
    spare, at least 64 MB) and parallel maintenance workers on every core of a local server.

    768-d vectors are stored out of line (TOAST), so the table's main heap looks tiny and the
    planner grants a CREATE INDEX no parallel worker at all (its heap is under
    min_parallel_table_scan_size); lowering that for the build's session is what lets the
    workers run (measured: 32 s -> 16 s for HNSW on 50k x 768, 2 cores)."""
    need = int(config.build_bytes(rows, dims) * 1.3)
    mem_mb = max(64, min(need, spare_memory(url)) // 2**20 + 1)
    workers = max(1, (os.cpu_count() or 1) - 1) if is_local(url) else 2
    return {"maintenance_work_mem": f"{mem_mb}MB", "max_parallel_maintenance_workers": workers,
            "min_parallel_table_scan_size": "0"}


def build(url: str, conn, config: Config, rows: int, dims: int, *, progress: bool = True) -> dict:
    """Build one candidate index on the scratch table; returns seconds, size, settings, notices."""
    settings = build_settings(url, config, rows, dims)
    notices: list[str] = []
    handler = lambda d: notices.append(d.message_primary)  # noqa: E731
    conn.add_notice_handler(handler)
    for name, value in settings.items():
        conn.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(str(value))))
    stop = watch(url, conn.info.backend_pid, config.label, progress=progress)
    start = time.perf_counter()
    try:
        conn.execute(sql.SQL("CREATE INDEX {} ON {} USING {} ({}) WITH ({})").format(
            sql.Identifier(config.index_name), SCRATCH, sql.SQL(config.method), config.kind.index_key(dims),
            config.with_clause()))
    finally:
        stop()
        conn.remove_notice_handler(handler)
    seconds = time.perf_counter() - start
    size = conn.execute("SELECT pg_relation_size(to_regclass(%s))",
                        [sql.Identifier(SCHEMA, config.index_name).as_string(conn)]).fetchone()[0]
    return {"index": config.label, "build_s": seconds, "size_bytes": size, "notices": notices, **settings}
