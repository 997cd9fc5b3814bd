"""Issue 26's run: pgvkit watch against an application load on real embeddings.

    .venv/bin/python bench/watch.py                  # 50,000 real rows, snapshots a minute apart
    .venv/bin/python bench/watch.py --rows 20000 --every 20

The table: real sentence embeddings (../shared/data, 200k set) lifted to 768 dimensions, an HNSW
index (m 16, ef_construction 64). Four readers call search_assets as an application does
(binary, prepared) and time every call themselves; two writers insert and delete rows. Three
watches `--every` seconds apart (each by the CLI, as cron runs it): for each interval, the
searches and their mean and p95 as the readers measured them beside what the watch read from
pg_stat_statements (the ratio should be within 0.8-1.2). Then what must trip it:
`ALTER FUNCTION search_assets ... SET hnsw.ef_search = 400`, then 1000 (where the plan becomes a
sequential scan at this size), a bulk delete of 30 % of the rows with autovacuum held off (dead rows),
and the index dropped (to be rebuilt). Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import multiprocessing
import time
from datetime import datetime

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from _common import ROOT, report, seed_database


def lifted(rows: int) -> np.ndarray:
    x = np.load(ROOT.parent / "shared" / "data" / "pypi_summaries_200k_minilm384.npy").astype(np.float32)[:rows]
    q, _ = np.linalg.qr(np.random.default_rng(768).standard_normal((768, x.shape[1])))
    return (x @ q.T.astype(np.float32)).astype(np.float32)


def _reader(url: str, vectors: np.ndarray, seed: int, stop, out: str) -> None:
    """One reader process (its own interpreter: no other thread's lock in what it times): calls
    search_assets until stopped; each call's end time and duration saved to `out`."""
    rng = np.random.default_rng(seed)
    calls = []
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor(binary=True) as cur:
            while not stop.is_set():
                q = vectors[rng.integers(len(vectors))]
                start = time.perf_counter()
                cur.execute("SELECT * FROM search_assets(%s, 10)", [q], prepare=True).fetchall()
                end = time.perf_counter()
                calls.append((time.time(), (end - start) * 1000))
    np.save(out, np.array(calls))


def _writer(url: str, vectors: np.ndarray, seed: int, stop) -> None:
    rng = np.random.default_rng(100 + seed)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        i = 0
        while not stop.is_set():
            conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) VALUES (%s, 'app', %s)",
                         [f"app-{seed}-{i}", vectors[rng.integers(len(vectors))]])
            if i % 2:
                conn.execute("DELETE FROM ip_asset_embeddings WHERE id = (SELECT min(id) + %s FROM"
                             " ip_asset_embeddings)", [int(rng.integers(1000))])
            i += 1
            stop.wait(0.05)


class Load:
    """Reader and writer processes, as an application's servers are."""

    def __init__(self, url: str, vectors: np.ndarray):
        self.url, self.vectors = url, vectors
        self.stop = multiprocessing.Event()
        self.dir = tempfile.mkdtemp(prefix="pgvkit-watch-load-")
        self.processes: list[multiprocessing.Process] = []
        self.calls = np.zeros((0, 2))

    def start(self, readers: int = 4, writers: int = 2) -> None:
        for r in range(readers):
            self.processes.append(multiprocessing.Process(
                target=_reader, args=(self.url, self.vectors, r, self.stop, os.path.join(self.dir, f"r{r}.npy"))))
        for w in range(writers):
            self.processes.append(multiprocessing.Process(target=_writer, args=(self.url, self.vectors, w, self.stop)))
        for p in self.processes:
            p.start()

    def finish(self) -> None:
        self.stop.set()
        for p in self.processes:
            p.join()
        self.calls = np.concatenate([np.load(os.path.join(self.dir, f)) for f in os.listdir(self.dir)])

    def between(self, start: float, end: float) -> dict:
        took = self.calls[(self.calls[:, 0] > start) & (self.calls[:, 0] <= end), 1]
        return {"calls": int(len(took)), "mean_ms": round(float(took.mean()), 3) if len(took) else None,
                "p95_ms": round(float(np.percentile(took, 95)), 3) if len(took) else None}


def watch(url: str, *extra: str) -> tuple[int, dict]:
    env = {**os.environ, "DATABASE_URL": url}
    proc = subprocess.run([sys.executable, "-m", "pgvkit", "watch", "--json", "--sample", "200", *extra], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if proc.returncode not in (0, 2):
        raise SystemExit(f"pgvkit watch failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.returncode, json.loads(proc.stdout)["servers"][0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--every", type=float, default=60.0, help="seconds between watches (default 60)")
    parser.add_argument("--readers", type=int, default=4, help="reader processes (default 4)")
    args = parser.parse_args()
    x = lifted(args.rows + 1000)
    rows, fresh = x[:args.rows], x[args.rows:]
    with seed_database() as url:
        from pgvkit.data.bulk import Column, copy_arrays
        from psycopg import sql

        ids = np.arange(1, args.rows + 1, dtype=np.int64)
        copy_arrays(url, sql.Identifier("ip_asset_embeddings"),
                    [Column("id", ids), Column("asset_id", np.array([f"s3://a/{i:09d}.jpg".encode() for i in ids])),
                     Column("owner_id", np.array([f"owner-{i % 50:03d}".encode() for i in ids])),
                     Column("embedding", rows)])
        fresh_file = os.path.join(tempfile.mkdtemp(prefix="pgvkit-watch-"), "fresh.npy")  # new images
        np.save(fresh_file, fresh)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT setval(pg_get_serial_sequence('ip_asset_embeddings', 'id'), %s)", [args.rows])
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("DROP INDEX idx_embedding_cosine")
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute("CREATE INDEX idx_embedding_hnsw ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
            conn.execute("ALTER TABLE ip_asset_embeddings SET (autovacuum_enabled = off)")  # autovacuum falls behind
            conn.execute("VACUUM ANALYZE ip_asset_embeddings")
        load = Load(url, fresh)
        load.start(readers=args.readers)
        said = lambda s: [f["detail"] for f in s["findings"] if f["status"] == "fail"]  # noqa: E731
        watched = []
        watch(url, "--query-file", fresh_file)
        for _ in range(2):
            time.sleep(args.every)  # a bench: the interval is what is measured
            watched.append(watch(url, "--query-file", fresh_file))
            print(json.dumps(watched[-1][1]["searches"]), file=sys.stderr, flush=True)
        raised = {}
        for ef in (400, 1000):  # what someone sets on search_assets by hand
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"ALTER FUNCTION search_assets(vector, integer, text) SET hnsw.ef_search = {ef}")
            time.sleep(args.every / 4)
            code_ef, snap_ef = watch(url, "--sample", "0")
            raised[ef] = {"exit": code_ef, "plan": snap_ef["plan"], "failed": said(snap_ef),
                          "warned": [f["detail"] for f in snap_ef["findings"] if f["status"] == "warn"]}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("ALTER FUNCTION search_assets(vector, integer, text) SET hnsw.ef_search = 40")
            gone = conn.execute("DELETE FROM ip_asset_embeddings WHERE id % 10 < 3").rowcount
            conn.execute("SELECT pg_stat_force_next_flush()")
        time.sleep(args.every / 4)
        code_dead, snap_dead = watch(url, "--sample", "0")
        with psycopg.connect(url, autocommit=True) as conn:  # someone drops the index to rebuild it
            conn.execute("VACUUM ip_asset_embeddings")
            conn.execute("DROP INDEX idx_embedding_hnsw")
        time.sleep(args.every / 4)
        code_gone, snap_gone = watch(url, "--sample", "0")
        load.finish()
        intervals = []
        for code, snap in watched:
            server = snap["searches"]["search_assets"]
            at = datetime.fromisoformat(snap["at"]).timestamp()  # the interval the watch read, on this clock
            readers = load.between(at - snap["interval_s"], at)
            intervals.append({"exit": code, "watch": server, "readers": readers,
                              "ratio_calls": round(server["calls"] / readers["calls"], 3),
                              "ratio_mean": round(server["mean_ms"] / readers["mean_ms"], 3),
                              "ratio_p95": round(server["p95_ms_est"] / readers["p95_ms"], 3),
                              "recall": snap["recall"], "plan": snap["plan"]})
        report({"benchmark": "pgvkit watch against an application load (issue 26)", "rows": args.rows,
                "readers": args.readers, "writers": 2, "cores": os.cpu_count(),
                "seconds_between": args.every, "intervals": intervals,
                "ef_search_raised": raised,
                "bulk_delete": {"rows_deleted": gone, "exit": code_dead, "failed": said(snap_dead)},
                "index_dropped": {"exit": code_gone, "plan": snap_gone["plan"], "failed": said(snap_gone)}})


if __name__ == "__main__":
    main()
