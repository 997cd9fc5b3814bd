"""Issue 25's run: the embedding model changed online on 100,000 real rows, every step by the
pgvkit CLI as a team runs it, with the application searching and writing throughout.

    .venv/bin/python bench/model_change.py                 # 100,000 rows (../shared/data, 200k set)
    .venv/bin/python bench/model_change.py --rows 20000    # a quicker run

The old model: the real sentence embeddings lifted to 768 dimensions; the new model: the same
texts lifted to 1,024 by another orthogonal map (its neighbours are the real ones). The old
index is the seed's IVFFlat rebuilt on the data, probes 10. Then: model add -> migrate ->
backfill (from an .npz keyed by asset_id) -> tune --model (the new column's HNSW build settings,
on the rows that have its embedding) -> plan -> migrate -> confirm --model (its search setting,
on the built index, before the switch) -> migrate -> switch -> migrate -> recall (1,000 fresh
new-model queries, never in the table, never seen by tune or confirm, which had 1,000 others)
-> confirm + migrate when still below 0.95 -> recall -> retire -> migrate. Four readers call search_assets without pause: old-model queries
until the switch, new-model ones from the moment the column exists (each reader alternates while
both are served); two writers insert rows (the old model's embedding before the add, both
embeddings as the new application version does while both are served, the new one only after the
switch) and delete others throughout; they pause their
inserts while the switch migration runs (the application's deploy: an insert names the columns
the switch swaps). At the end: failed
searches, rows lost or doubled, reader latency per phase (p95, and its ratio to the phase before
the add: what the backfill's pacing costs the application), recall. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from _common import ROOT, report, seed_database

CLIP = "clip-vit-L/14@v2"
FRESH = 1000  # new-model queries held out of the table, for pgvkit recall


def lifted(dims: int, seed: int) -> np.ndarray:
    x = np.load(ROOT.parent / "shared" / "data" / "pypi_summaries_200k_minilm384.npy").astype(np.float32)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dims, x.shape[1])))
    return (x @ q.T.astype(np.float32)).astype(np.float32)


class App:
    """The application: readers and writers on their own connections, phase by phase."""

    def __init__(self, url: str, old: np.ndarray, new: np.ndarray):
        self.url, self.old, self.new = url, old, new
        self.phase = "before"  # before the add, "both" models served, "after" the switch
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.latency: dict[str, list[float]] = {}
        self.inserted: set[int] = set()
        self.deleted: set[int] = set()
        self.source: dict[str, int] = {}  # an inserted asset: which text's embeddings it has
        self.threads: list[threading.Thread] = []

    def start_readers(self, n: int = 4) -> None:
        for r in range(n):
            self.threads.append(threading.Thread(target=self._read, args=(r,), daemon=True))
            self.threads[-1].start()

    def start_writers(self, n: int = 2) -> None:
        for w in range(n):
            self.threads.append(threading.Thread(target=self._write, args=(w,), daemon=True))
            self.threads[-1].start()

    def _read(self, r: int) -> None:
        rng = np.random.default_rng(r)
        with psycopg.connect(self.url, autocommit=True) as conn:
            register_vector(conn)
            i = 0
            while not self.stop.is_set():
                phase = self.phase
                use_new = phase == "after" or (phase in ("both", "switching") and (i + r) % 2)
                q = (self.new if use_new else self.old)[rng.integers(len(self.old))]
                start = time.perf_counter()
                try:
                    conn.execute("SELECT id FROM search_assets(%s, 10)", [q]).fetchall()
                except psycopg.Error as exc:
                    self.failures.append(f"{phase} {'new' if use_new else 'old'}: {str(exc).splitlines()[0]}")
                self.latency.setdefault(f"{phase} {'new' if use_new else 'old'}", []).append(
                    time.perf_counter() - start)
                i += 1

    def _write(self, w: int) -> None:
        rng = np.random.default_rng(100 + w)
        with psycopg.connect(self.url, autocommit=True) as conn:
            register_vector(conn)
            i = 0
            while not self.stop.is_set():
                j = rng.integers(len(self.old))
                if self.phase == "switching":  # the application's deploy: inserts name the columns the switch swaps
                    self.stop.wait(0.02)
                    continue
                try:
                    if self.phase in ("before", "after"):  # the old application version; the new one after the switch
                        row = conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) VALUES"
                                           " (%s, 'app', %s) RETURNING id",
                                           [f"app-{w}-{i}", (self.new if self.phase == "after" else self.old)[j]]
                                           ).fetchone()
                    else:
                        row = conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding,"
                                           " embedding_clip_vit_l_14_v2) VALUES (%s, 'app', %s, %s) RETURNING id",
                                           [f"app-{w}-{i}", self.old[j], self.new[j]]).fetchone()
                    self.inserted.add(row[0])
                    self.source[f"app-{w}-{i}"] = int(j)
                    if i % 3 == 0:
                        gone = conn.execute("DELETE FROM ip_asset_embeddings WHERE id = (SELECT id FROM"
                                            " ip_asset_embeddings WHERE owner_id <> 'app' AND id %% 2 = %s"
                                            " ORDER BY id DESC LIMIT 1 OFFSET %s) RETURNING id",
                                            [w, int(rng.integers(1000))]).fetchone()
                        if gone:
                            self.deleted.add(gone[0])
                except psycopg.Error as exc:
                    self.failures.append(f"writer {self.phase}: {str(exc).splitlines()[0]}")
                i += 1
                self.stop.wait(0.02)  # an application's pace: about 50 writes a second each

    def p95(self) -> dict:
        return {k: {"searches": len(v), "p50_ms": round(float(np.percentile(v, 50)) * 1000, 2),
                    "p95_ms": round(float(np.percentile(v, 95)) * 1000, 2)} for k, v in self.latency.items()}


def cli(step: str, *args: str, url: str, migrations: Path, steps: dict, timeout: float = 7200) -> str:
    env = {**os.environ, "DATABASE_URL": url, "TQDM_DISABLE": "1"}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pgvkit", *args, "--migrations", str(migrations)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    steps[step] = {"wall_s": round(time.perf_counter() - start, 1), "exit": proc.returncode}
    print(f"[{step}] exit {proc.returncode} in {steps[step]['wall_s']} s: pgvkit {' '.join(args)}", file=sys.stderr,
          flush=True)
    if proc.returncode not in (0, 1) and not (args[0] == "recall" and proc.returncode == 2):  # 2: below the target
        raise SystemExit(f"{step} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]} {proc.stdout.strip()[-2000:]}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    old_all, new_all = lifted(768, 768), lifted(1024, 1024)
    rows = min(args.rows, len(old_all) - 2 * FRESH)
    old, new = old_all[:rows], new_all[:rows]
    work = Path(tempfile.mkdtemp(prefix="pgvkit-model-change-"))
    np.save(work / "fresh_new.npy", new_all[-FRESH:])  # pgvkit recall's, never seen by tune or confirm
    np.save(work / "tuning_new.npy", new_all[-2 * FRESH:-FRESH])  # tune's and confirm's new images
    steps: dict = {}
    with seed_database() as url:
        migrations = work / "migrations"
        import shutil

        shutil.copytree(ROOT / "migrations", migrations)
        from pgvkit.data.bulk import Column, copy_arrays
        from psycopg import sql

        ids = np.arange(1, rows + 1, dtype=np.int64)
        assets = np.array([f"s3://a/{i:09d}.jpg".encode() for i in ids])
        copy_arrays(url, sql.Identifier("ip_asset_embeddings"),
                    [Column("id", ids), Column("asset_id", assets),
                     Column("owner_id", np.array([f"owner-{i % 50:03d}".encode() for i in ids])),
                     Column("embedding", old)])
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT setval(pg_get_serial_sequence('ip_asset_embeddings', 'id'), %s)", [rows])
            conn.execute("SET maintenance_work_mem = '1GB'")
            conn.execute("REINDEX INDEX idx_embedding_cosine")  # the seed's IVFFlat, on its data
            conn.execute("ALTER FUNCTION search_assets(vector, integer, text) SET ivfflat.probes = 10")
            conn.execute("VACUUM ANALYZE ip_asset_embeddings")
        np.savez(work / "clip.npz", asset_ids=assets.astype(str), embeddings=new)  # the re-embedding job's output
        app = App(url, old, new)
        app.start_readers()
        app.start_writers()
        app.stop.wait(20)  # the readers' latency before anything changes
        cli("add", "model", "add", CLIP, "--dimensions", "1024", url=url, migrations=migrations, steps=steps)
        cli("migrate_add", "migrate", url=url, migrations=migrations, steps=steps)
        app.phase = "both"
        out = cli("backfill", "model", "backfill", CLIP, "--from", str(work / "clip.npz"), url=url,
                  migrations=migrations, steps=steps)
        steps["backfill"]["said"] = out.strip().splitlines()[-1]
        with psycopg.connect(url) as conn:  # what the old application version inserted meanwhile: re-embedded too
            late = [r[0] for r in conn.execute("SELECT asset_id FROM ip_asset_embeddings"
                                               " WHERE embedding_clip_vit_l_14_v2 IS NULL")]
        np.savez(work / "late.npz", asset_ids=np.array(late), embeddings=new[[app.source[a] for a in late]])
        out = cli("backfill_late", "model", "backfill", CLIP, "--from", str(work / "late.npz"), url=url,
                  migrations=migrations, steps=steps)
        steps["backfill_late"].update(rows=len(late), said=out.strip().splitlines()[-1])
        app.phase = "indexing"
        # its index tuned on the rows that have its embedding, written as the model's index migration
        out = cli("tune_model", "tune", "--model", CLIP, "--write-migration", "--query-file",
                  str(work / "tuning_new.npy"), url=url, migrations=migrations, steps=steps)
        steps["tune_model"]["said"] = [line for line in out.splitlines() if line.startswith(("recommended", "NOT"))]
        plan = json.loads(cli("plan_index", "plan", "--json", url=url, migrations=migrations, steps=steps) or "{}")
        steps["plan_index"]["build"] = next((m.get("build") for m in plan.get("migrations", []) if m.get("build")), None)
        out = cli("migrate_index", "migrate", url=url, migrations=migrations, steps=steps)
        steps["migrate_index"]["said"] = [line.strip() for line in out.splitlines() if "estimated" in line]
        app.phase = "both"
        # its search setting confirmed on its own index before the switch, bound by a migration
        cli("confirm_model", "confirm", "--model", CLIP, "--write-migration", "--query-file",
            str(work / "tuning_new.npy"), url=url, migrations=migrations, steps=steps)
        cli("migrate_confirm_model", "migrate", url=url, migrations=migrations, steps=steps)
        cli("switch", "model", "switch", CLIP, url=url, migrations=migrations, steps=steps)
        app.phase = "switching"
        cli("migrate_switch", "migrate", url=url, migrations=migrations, steps=steps)
        app.phase = "after"
        audit = json.loads(cli("recall", "recall", "--json", "--sample", "1000", "--query-file",
                               str(work / "fresh_new.npy"), url=url, migrations=migrations, steps=steps))
        recall = {k: v["recall"] for k, v in audit["shapes"].items()}
        if min(recall.values()) < 0.95:
            cli("confirm", "confirm", "--write-migration", "--query-file", str(work / "tuning_new.npy"), url=url,
                migrations=migrations, steps=steps)
            cli("migrate_confirm", "migrate", url=url, migrations=migrations, steps=steps)
            audit = json.loads(cli("recall_confirmed", "recall", "--json", "--sample", "1000", "--query-file",
                                   str(work / "fresh_new.npy"), url=url, migrations=migrations, steps=steps))
        cli("retire", "model", "retire", "current", "--confirm-model", "current", "--window-days", "0", url=url,
            migrations=migrations, steps=steps)
        cli("migrate_retire", "migrate", url=url, migrations=migrations, steps=steps)
        app.stop.wait(10)
        app.stop.set()
        for t in app.threads:
            t.join()
        with psycopg.connect(url) as conn:
            now = {r[0] for r in conn.execute("SELECT id FROM ip_asset_embeddings")}
            doubled = conn.execute("SELECT count(*) - count(DISTINCT id) FROM ip_asset_embeddings").fetchone()[0]
        expected = (set(range(1, rows + 1)) | app.inserted) - app.deleted
        latency = app.p95()
        base = latency.get("before old", {}).get("p95_ms")
        report({"benchmark": "model change online (issue 25)", "rows": rows, "dims": [768, 1024],
                "steps": steps, "failed_searches_or_writes": len(app.failures), "failures": app.failures[:5],
                "rows_inserted": len(app.inserted), "rows_deleted": len(app.deleted),
                "rows_lost": len(expected - now), "rows_back_from_the_dead": len(now - expected),
                "rows_doubled": doubled, "reader_latency": latency,
                "p95_ratio_to_before": {k: round(v["p95_ms"] / base, 2) for k, v in latency.items()} if base else None,
                "recall_new_model_after_switch": recall,
                "recall_final": {k: v["recall"] for k, v in audit["shapes"].items()}})
        if args.out:
            Path(args.out).write_text(json.dumps({"steps": steps}, indent=2))


if __name__ == "__main__":
    main()
