"""The team's path at the team's scale: load, storage (the vectors inline, clustered by owner;
--storage default leaves them out of line), tune, plan, migrate, confirm, migrate, audit, on the
seed's table, each step run as a user runs it (the pgvkit CLI), timed, with its peak memory.

    .venv/bin/python bench/scale.py                       # 1,000,000 x 768 synthetic topic embeddings
    .venv/bin/python bench/scale.py --rows 200000         # a smaller synthetic run
    .venv/bin/python bench/scale.py --data real           # the 200,000 real sentence embeddings (../shared/data)
    .venv/bin/python bench/scale.py --data densified      # 1,000,000: the real ones and rows made between them
    .venv/bin/python bench/scale.py --data skewed         # 1,000,000: unequal clusters, low dimension, long-tail owners

New vectors are never in the table: 1,000 go to `pgvkit confirm`, 1,000 others to `pgvkit recall`
and to this script's own brute force over the loaded rows. One owner holds 1 % of the rows; its
filtered searches through search_assets are checked the same way. Then every search setting the
tuner may bind is planned through search_assets at this size: none may read the table
sequentially. Prints JSON (and --out FILE); the README's scale table quotes it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

from _common import ROOT, report, seed_database
from densify import densify, real_rows, to_768
from skewed import Skewed, long_tail_owners
# imported before anything runs: a run lasts up to an hour, and a module first imported at its end
# from a source tree edited meanwhile can fail (a 2M run lost its last checks that way)
from pgvkit import search
from pgvkit.data.bulk import Column, copy_arrays
from pgvkit.data.synthetic import Topics
from pgvkit.tuning.confirm import SEARCH_GRID, probe_function
from pgvkit.tuning.probe import search_probe
from psycopg import sql

ONE_PERCENT = "one-percent"  # every owner id 11 characters: binary COPY of fixed-width columns
QUERIES = 1000


def owners(n: int, rng: np.random.Generator, clusters: tuple | None = None) -> np.ndarray:
    """40 % / 20 % for two large owners, exactly 1 % for ONE_PERCENT, the rest over 500 small ones;
    for --data skewed (`clusters`: its generator and each row's cluster) the long tail of
    bench/skewed.py, with exactly 1 % of the rows, drawn at random, given to ONE_PERCENT."""
    roll = rng.permutation(n)
    if clusters is not None:
        out = long_tail_owners(*clusters, rng)
        out[roll[: n // 100]] = ONE_PERCENT
        return out
    out = np.array([f"small-{i:05d}" for i in rng.integers(0, 500, n)], dtype=object)
    out[roll[: int(0.40 * n)]] = "big-owner-a"
    out[roll[int(0.40 * n): int(0.60 * n)]] = "big-owner-b"
    out[roll[int(0.60 * n): int(0.61 * n)]] = ONE_PERCENT
    return out


def vectors(data: str, rows: int, seed: int, extra: int = 0) -> tuple[np.ndarray, np.ndarray, tuple | None]:
    """(table rows, 2 x QUERIES + `extra` new vectors never loaded, for skewed data its generator and
    each row's cluster)."""
    held = 2 * QUERIES + extra
    if data == "skewed":
        made = Skewed(768, seed=seed)
        x, clusters = made.draw(rows)
        return x, made.draw(held)[0], (made, clusters)
    if data == "real":
        x = np.load(ROOT.parent / "shared" / "data" / "pypi_summaries_200k_minilm384.npy").astype(np.float32)
        q, _ = np.linalg.qr(np.random.default_rng(768).standard_normal((768, x.shape[1])))
        x = (x @ q.T.astype(np.float32)).astype(np.float32)  # an orthogonal map: every cosine distance kept
        x = x[np.random.default_rng(seed).permutation(len(x))]
        rows = min(rows, len(x) - held)
        return x[:rows], x[-held:], None
    if data == "densified":  # every real embedding here, and rows made between real neighbours (bench/densify.py)
        x = real_rows(seed)
        return to_768(densify(x[:-held], rows, seed)), to_768(x[-held:]), None
    topics = Topics(768, rows=rows, per_topic=200, seed=seed)
    return topics.draw(rows), topics.draw(held), None


def load(url: str, data: np.ndarray, owned: np.ndarray) -> None:
    ids = np.arange(1, len(data) + 1, dtype=np.int64)
    assets = np.array([f"s3://a/{i:09d}".encode() for i in ids])
    copy_arrays(url, sql.Identifier("ip_asset_embeddings"),
                [Column("id", ids), Column("asset_id", assets), Column("owner_id", owned.astype("S")),
                 Column("embedding", data)])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT setval(pg_get_serial_sequence('ip_asset_embeddings', 'id'), %s)", [len(data)])
        conn.execute("VACUUM ANALYZE ip_asset_embeddings")


def run(step: str, *args: str, url: str, log: Path, migrations: Path) -> dict:
    """One pgvkit command as a user runs it: wall time, its own peak memory, exit code, output."""
    env = {**os.environ, "DATABASE_URL": url, "TQDM_DISABLE": "1"}
    peak = log / f"{step}.peak"
    # the command's own peak memory: VmHWM of its process, read as it exits (a forked child's
    # rusage would count this script's arrays too)
    wrapper = ("import atexit, runpy, sys; f = sys.argv.pop(1); atexit.register(lambda: open(f, 'w').write(next("
               "l for l in open('/proc/self/status') if l.startswith('VmHWM')))); sys.argv[0] = 'pgvkit'; "
               "runpy.run_module('pgvkit', run_name='__main__')")
    cmd = [sys.executable, "-c", wrapper, str(peak), *args, "--migrations", str(migrations)]
    start = time.perf_counter()
    with open(log / f"{step}.out", "w") as out, open(log / f"{step}.err", "w") as err:
        code = subprocess.run(cmd, stdout=out, stderr=err, env=env, cwd=ROOT).returncode
    wall = time.perf_counter() - start
    text = (log / f"{step}.out").read_text()
    rss = int(peak.read_text().split()[1]) // 1024 if peak.exists() else None
    print(f"[{step}] exit {code} in {wall:.0f} s: pgvkit {' '.join(args)}", file=sys.stderr, flush=True)
    return {"step": step, "wall_s": round(wall, 1), "peak_rss_mb": rss, "exit": code, "output": text}


def exact(data: np.ndarray, owned: np.ndarray, queries: np.ndarray, owner: str | None, k: int = 10):
    """This script's own exact neighbours (numpy over the rows it loaded): ids and the k-th similarity."""
    base = data if owner is None else data[owned == owner]
    base_ids = np.arange(1, len(data) + 1) if owner is None else np.flatnonzero(owned == owner) + 1
    truth, kth = [], []
    for lo in range(0, len(queries), 100):  # 100 queries x the rows at a time: memory bounded at 1M rows
        sims = queries[lo:lo + 100] @ base.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        truth.append(top)
        kth.append(np.take_along_axis(sims, top, axis=1).min(axis=1))
    return base_ids[np.concatenate(truth)], np.concatenate(kth)


def _hit(rows, right: set, kth: float, k: int) -> float:
    return sum(1 for r in rows if r[0] in right or 1 - r[1] >= kth - 1e-5) / k  # a tie at the k-th counts


def brute_force(url: str, data: np.ndarray, owned: np.ndarray, queries: np.ndarray, owner: str | None,
                k: int = 10) -> dict:
    """Recall@k of search_assets against this script's own exact neighbours."""
    truth, kth = exact(data, owned, queries, owner, k)
    hits, latency, short = [], [], 0
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for i, q in enumerate(queries):
            start = time.perf_counter()
            rows = conn.execute("SELECT id, distance FROM search_assets(%s, %s, %s)", [q, k, owner]).fetchall()
            latency.append((time.perf_counter() - start) * 1000)
            short += len(rows) < k
            hits.append(_hit(rows, set(truth[i].tolist()), kth[i], k))
    return {"queries": len(queries), "recall": round(float(np.mean(hits)), 4), "short": short,
            "p50_ms": round(float(np.percentile(latency, 50)), 2), "p95_ms": round(float(np.percentile(latency, 95)), 2)}


def by_search_setting(url: str, data: np.ndarray, owned: np.ndarray, queries: np.ndarray, owner: str | None,
                      k: int = 10) -> dict:
    """Recall@k and latency of search_assets at each hnsw.ef_search (through confirm's probe copy,
    the bound settings otherwise kept): the setting one kind of search needs on its own, e.g.
    unfiltered searches against a small owner's, when search_assets binds one for both."""
    truth, kth = exact(data, owned, queries, owner, k)
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        if "hnsw.ef_search" not in search.settings(conn):
            return out
        for ef in (40, 80, 160, 320, 500, 1000):
            probe_function(conn, {"hnsw.ef_search": str(ef)})
            search_probe(conn, queries[:20], None, k, owner)  # warm the prepared statement and the cache
            ids, distances, latency = search_probe(conn, queries, None, k, owner)
            hits = [_hit(list(zip(ids[i], distances[i])), set(truth[i].tolist()), kth[i], k)
                    for i in range(len(queries))]
            out[str(ef)] = {"recall": round(float(np.mean(hits)), 4), "short": sum(len(r) < k for r in ids),
                            "p50_ms": round(float(np.percentile(latency, 50)), 2),
                            "p95_ms": round(float(np.percentile(latency, 95)), 2)}
            print(f"[by ef_search] {owner or 'unfiltered'} ef {ef}: {out[str(ef)]}", file=sys.stderr, flush=True)
    return out


def sequential_settings(url: str) -> dict:
    """Every search setting the tuner may bind (its ef_search / probes grids), planned through
    search_assets at this size with the function's bound settings: which read the table."""
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        method = conn.execute("SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
                              " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = 'ip_asset_embeddings'::regclass"
                              " AND am.amname IN ('hnsw', 'ivfflat')").fetchone()[0]
        param = "hnsw.ef_search" if method == "hnsw" else "ivfflat.probes"
        probe = conn.execute("SELECT embedding FROM ip_asset_embeddings LIMIT 1").fetchone()[0]
        seq, bound = [], search.settings(conn)
        for value in SEARCH_GRID[param]:
            probe_function(conn, {param: str(value)})
            plan = search.nested_plan(conn, probe, function="pg_temp.pgvkit_confirm_search")
            if plan is None or not search._index_scans(plan["Plan"]):
                seq.append(value)
    return {"param": param, "values_planned": len(SEARCH_GRID[param]), "sequential_at": seq,
            "bound": bound}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--data", choices=["synthetic", "real", "densified", "skewed"], default="synthetic")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune-rows", type=int, help="pgvkit tune --rows (default: none, as the Done-when asks)")
    parser.add_argument("--target", type=float, default=0.95,
                        help="--target-recall for tune and confirm (default 0.95; lower it to carry the path through "
                             "on data where nothing reaches 0.95, and read the recall figures against 0.95 anyway)")
    parser.add_argument("--tune-query-file", action="store_true",
                        help="give tune 400 more new vectors never loaded (--query-file) instead of the rows it takes "
                             "out of its sample: on a table whose rows have near-duplicates those are found too easily")
    parser.add_argument("--only-tune", action="store_true", help="stop after pgvkit tune (its wall time and choice)")
    parser.add_argument("--storage", choices=["inline", "default"], default="inline",
                        help="inline (default, the README's path for a table with small owners): pgvkit storage "
                             "--write-migration and pgvkit migrate after the load, before tune; default: pgvector's "
                             "out-of-line storage, as the table was loaded")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    log = Path(tempfile.mkdtemp(prefix="pgvkit-scale-"))
    rng = np.random.default_rng(args.seed)
    start = time.perf_counter()
    data, new, clusters = vectors(args.data, args.rows, args.seed, extra=400 if args.tune_query_file else 0)
    if args.tune_query_file:
        np.save(log / "tune_queries.npy", new[2 * QUERIES:])
    owned = owners(len(data), rng, clusters)
    names, counts = np.unique(owned[owned != ONE_PERCENT].astype(str), return_counts=True)
    largest = str(names[counts.argmax()])
    np.save(log / "confirm_queries.npy", new[:QUERIES])
    np.save(log / "recall_queries.npy", new[QUERIES:2 * QUERIES])
    steps = {}
    with seed_database() as url:
        with psycopg.connect(url) as conn:  # the server exactly as pgvkit starts it: sized for this machine
            server = dict(conn.execute("SELECT name, current_setting(name) FROM pg_settings WHERE name IN"
                                       " ('shared_buffers', 'effective_cache_size', 'maintenance_work_mem',"
                                       " 'max_wal_size')").fetchall())
        print(f"[server] as pgvkit starts it: {server}", file=sys.stderr, flush=True)
        t = time.perf_counter()
        load(url, data, owned)
        steps["load"] = {"wall_s": round(time.perf_counter() - t, 1), "rows": len(data)}
        print(f"[load] {len(data):,} rows in {steps['load']['wall_s']} s", file=sys.stderr, flush=True)
        migrations = log / "migrations"
        migrations.mkdir()
        for f in (ROOT / "migrations").glob("*.sql"):
            (migrations / f.name).write_text(f.read_text())
        if args.storage == "inline":  # the vectors into the table's pages, clustered by owner: before the index
            steps["storage"] = run("storage", "storage", "--write-migration", url=url, log=log, migrations=migrations)
            steps["migrate_storage"] = run("migrate_storage", "migrate", url=url, log=log, migrations=migrations)
        extra = (("--rows", str(args.tune_rows)) if args.tune_rows else ()) + (
            ("--target-recall", str(args.target)) if args.target != 0.95 else ()) + (  # else no option at all
            ("--query-file", str(log / "tune_queries.npy")) if args.tune_query_file else ())
        steps["tune"] = run("tune", "tune", "--write-migration", *extra, url=url, log=log, migrations=migrations)
        if args.only_tune or steps["tune"]["exit"] != 0:  # nothing written (target out of reach), or asked
            said = [line for line in steps["tune"]["output"].splitlines()
                    if line.startswith(("recommended", "NOT", "below"))]
            report({"benchmark": "scale: tune only", "data": args.data, "rows": len(data), "dims": 768,
                    "cores": os.cpu_count(), "server": server, "load_s": steps["load"]["wall_s"],
                    "tune": {k: v for k, v in steps["tune"].items() if k != "output"}, "tune_said": said,
                    "tune_under_10_min": steps["tune"]["wall_s"] < 600, "logs": str(log)},
                   name=f"scale-tune-{args.data}-{len(data)}")
            return
        steps["plan"] = run("plan", "plan", "--json", url=url, log=log, migrations=migrations)
        steps["migrate"] = run("migrate", "migrate", url=url, log=log, migrations=migrations)
        steps["confirm"] = run("confirm", "confirm", "--query-file", str(log / "confirm_queries.npy"),
                               "--target-recall", str(args.target), "--write-migration", "--json", url=url, log=log,
                               migrations=migrations)
        steps["migrate_settings"] = run("migrate_settings", "migrate", url=url, log=log, migrations=migrations)
        steps["recall"] = run("recall", "recall", "--query-file", str(log / "recall_queries.npy"), "--sample", "1000",
                              "--json", url=url, log=log, migrations=migrations)
        steps["verify"] = run("verify", "verify", "--json", url=url, log=log, migrations=migrations)
        own = {"new vectors": brute_force(url, data, owned, new[QUERIES:2 * QUERIES], None),
               f"owner {ONE_PERCENT} (1%)": brute_force(url, data, owned, new[QUERIES:QUERIES + 200], ONE_PERCENT),
               f"owner {largest} ({(owned == largest).mean():.0%})": brute_force(url, data, owned,
                                                                               new[QUERIES:QUERIES + 200], largest)}
        planned = sequential_settings(url)
        settings = {"unfiltered new vectors": by_search_setting(url, data, owned, new[QUERIES:2 * QUERIES], None),
                    f"owner {ONE_PERCENT} (1%)": by_search_setting(url, data, owned, new[QUERIES:QUERIES + 200],
                                                                   ONE_PERCENT)}
    figures = summarise(steps, own, planned)
    result = {"benchmark": "scale: tune, migrate, confirm, audit", "data": args.data, "rows": len(data), "dims": 768,
              "storage": args.storage,
              "cores": os.cpu_count(), "server": server, "total_s": round(time.perf_counter() - start, 1), **figures,
              "steps": {name: {k: v for k, v in s.items() if k != "output"} for name, s in steps.items()},
              "brute_force": own, "by_ef_search": settings, "seq_scan_check": planned, "logs": str(log)}
    report(result, name=f"scale-{args.data}-{len(data)}")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def summarise(steps: dict, own: dict, planned: dict) -> dict:
    """The Done-when figures: tune wall, plan's estimate against the build, predicted against measured."""
    out = {}
    plan = json.loads(steps["plan"]["output"] or "{}")
    build = next((m.get("build") for m in plan.get("migrations", []) if m.get("build")), "")
    out["plan_build_estimate"] = build
    migrate_err = steps["migrate"]["output"]
    out["migrate_said"] = [line.strip() for line in migrate_err.splitlines() if "estimated the build" in line]
    confirm = json.loads(steps["confirm"]["output"] or "{}")
    out["tune_predicted"] = confirm.get("predicted")
    out["confirm_chosen"] = confirm.get("chosen")
    out["confirm_at_chosen"] = confirm.get("at_chosen")
    out["confirm_at_tuned"] = confirm.get("at_tuned")
    audit = json.loads(steps["recall"]["output"] or "{}")
    out["pgvkit_recall"] = {name: s.get("recall") for name, s in audit.get("shapes", {}).items()}
    out["checks"] = {
        "tune_under_10_min": steps["tune"]["wall_s"] < 600,
        "migrate_within_25pct_of_plan": None,  # filled by the reader from migrate_said (x ratio within 0.75-1.25)
        "new_vectors_recall_ge_0.95": own["new vectors"]["recall"] >= 0.95,
        "similar_assets_recall_ge_0.95": (out["pgvkit_recall"].get("similar_assets") or 0) >= 0.95,
        # tune's prediction at its setting against confirm's measurement at that setting, on the live index
        "prediction_within_0.02": _prediction_held(out["tune_predicted"], out["confirm_at_tuned"]),
        # the range tune printed (the fall's standard error and the sample's noise) holds what confirm measured
        "measured_within_tunes_range": _within_range(out["tune_predicted"], out["confirm_at_tuned"]),
        "one_percent_owner_recall_ge_0.95": all(v["recall"] >= 0.95 and v["short"] == 0
                                                for k, v in own.items() if ONE_PERCENT in k),
        "no_sequential_scan": not planned["sequential_at"],
        # through the live search_assets, after the audit: what the application gets (targets of issue 37)
        "unfiltered_p95_le_10ms": own["new vectors"]["p95_ms"] <= 10,
        "one_percent_owner_p95_le_20ms": all(v["p95_ms"] <= 20 for k, v in own.items() if ONE_PERCENT in k),
    }
    ratio = [float(m.group(1)) for line in out["migrate_said"] if (m := re.search(r"\((\d+(?:\.\d+)?)x[;)]", line))]
    if ratio:
        out["checks"]["migrate_within_25pct_of_plan"] = 0.75 <= ratio[0] <= 1.25
    return out


def _prediction_held(predicted: str | None, measured: dict | None) -> bool | None:
    """Every shape tune predicted ("new vectors 0.877 (fresh ...), similar assets 0.865 ...") within
    0.02 of what confirm measured at the same setting on the full table."""
    import re

    if not predicted or not measured:
        return None
    said = {name: float(value) for name, value in re.findall(r"(new vectors|similar assets) (0\.\d+)", predicted)}
    return bool(said) and all(abs(v - measured[name]) <= 0.02 for name, v in said.items() if name in measured)


def _within_range(predicted: str | None, measured: dict | None) -> bool | None:
    """Every shape's recall confirm measured at tune's setting inside the range tune printed for it
    ("new vectors 0.965 (range 0.951-0.975, fresh ...)")."""
    if not predicted or not measured:
        return None
    said = re.findall(r"(new vectors|similar assets) 0\.\d+ \(range (0\.\d+|1\.000)-(0\.\d+|1\.000)", predicted)
    return bool(said) and all(float(lo) - 0.0005 <= measured[name] <= float(hi) + 0.0005
                              for name, lo, hi in said if name in measured)


if __name__ == "__main__":
    main()
