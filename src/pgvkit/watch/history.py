"""Where pgvkit watch keeps its looks: `pgvkit.watch_snapshots` on the primary, a row per
server per watch (the statistics' baseline for the next difference among them), and what
doctor, verify and 07 read back."""

from __future__ import annotations

import json
import math

import psycopg

from ..checks import Check
from ..display import Table
from ..migrator.history import WATCH_DDL

__all__ = ["ensure_table", "record_snapshot", "last", "latest", "history", "readable", "Watches", "latest_findings"]

_COLUMNS = ("at", "server", "standby", "interval_s", "searches", "plan", "index_definition", "settings", "live_rows",
            "dead_rows", "recall", "findings", "notes", "baseline")


def ensure_table(conn) -> bool:
    """The table, made when missing (as pgvkit migrate makes it); False when this role may not."""
    if conn.execute("SELECT current_setting('transaction_read_only') = 'on'").fetchone()[0]:
        return False  # a read-only session (default_transaction_read_only on its role or database)
    try:
        with conn.transaction():
            if conn.execute("SELECT to_regclass('pgvkit.watch_snapshots')").fetchone()[0] is None:
                conn.execute("CREATE SCHEMA IF NOT EXISTS pgvkit")
                conn.execute(WATCH_DDL)
            return conn.execute("SELECT has_table_privilege('pgvkit.watch_snapshots', 'INSERT')").fetchone()[0]
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction):
        return False
    except psycopg.errors.UniqueViolation:  # another watch made it at the same moment
        return True


def record_snapshot(conn, snap, table: str) -> bool:
    try:
        with conn.transaction():
            conn.execute(
                "INSERT INTO pgvkit.watch_snapshots (at, server, standby, table_name, interval_s, searches, plan,"
                " index_definition, settings, live_rows, dead_rows, recall, findings, notes, baseline)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [snap.at, snap.server, snap.standby, table, snap.interval.seconds, json.dumps(snap.interval.figures()),
                 snap.plan, snap.index, json.dumps(snap.settings), snap.live_rows, snap.dead_rows,
                 json.dumps(snap.recall), json.dumps([vars(c) for c in snap.findings]), json.dumps(snap.notes),
                 json.dumps(snap.baseline)])
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.ReadOnlySqlTransaction):
        return False
    return True


def _readable(conn) -> bool:
    """The table is there and this role may read it (an application role usually may not)."""
    with conn.transaction():
        if not conn.execute("SELECT to_regnamespace('pgvkit') IS NOT NULL AND has_schema_privilege('pgvkit', 'USAGE')"
                            ).fetchone()[0]:
            return False
        return conn.execute("SELECT to_regclass('pgvkit.watch_snapshots') IS NOT NULL AND has_table_privilege("
                            "'pgvkit.watch_snapshots', 'SELECT')").fetchone()[0]


def _rows(conn, where: str, params: list) -> list[dict]:
    if not _readable(conn):
        return []
    with conn.transaction():
        cur = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM pgvkit.watch_snapshots WHERE {where}", params)
        return [dict(zip(_COLUMNS, r)) for r in cur.fetchall()]


def last(conn, table: str, server: str) -> dict | None:
    """The newest look at `server`, or None."""
    found = _rows(conn, "table_name = %s AND server = %s ORDER BY at DESC LIMIT 1", [table, server])
    return found[0] if found else None


def latest(conn, table: str = "ip_asset_embeddings") -> list[dict]:
    """The newest look at each server, each with the one before it as "before" (or None)."""
    out = []
    for row in _rows(conn, "table_name = %s AND at >= (SELECT max(at) - interval '1 day' FROM pgvkit.watch_snapshots"
                     " WHERE table_name = %s) ORDER BY server, at", [table, table]):
        if out and out[-1]["server"] == row["server"]:
            row["before"] = out.pop()
            row["before"].pop("before", None)
        else:
            row["before"] = None
        out.append(row)
    return out


def history(conn, table: str = "ip_asset_embeddings"):
    """Every look as a DataFrame (one row per server per watch), oldest first, for 07's figure."""
    import pandas as pd

    rows = []
    for r in _rows(conn, "table_name = %s ORDER BY at", [table]):
        found = r["searches"].get("search_assets") or r["searches"].get("function") or {}
        rows.append({"at": r["at"], "server": r["server"], "searches": found.get("calls"),
                     "mean_ms": found.get("mean_ms"), "p95_ms": found.get("p95_ms_est"),
                     "similar_assets": r["recall"].get("similar_assets"), "new_vectors": r["recall"].get("new_vectors"),
                     "plan": r["plan"], "index": r["index_definition"],
                     "dead_share": _share(r["live_rows"], r["dead_rows"]),
                     "failed": [f["name"] for f in r["findings"] if f["status"] == "fail"]})
    return pd.DataFrame(rows, columns=["at", "server", "searches", "mean_ms", "p95_ms", "similar_assets",
                                       "new_vectors", "plan", "index", "dead_share", "failed"])


class Watches(Table):
    """Every look, one row per server per watch, as a person reads it: times to the second,
    blanks for what a look did not measure, the checks that failed by name."""

    columns = ("at", "server", "searches", "mean ms", "p95 ms (est.)", "similar assets", "new vectors", "plan",
               "failed")

    def __init__(self, frame, table: str = "ip_asset_embeddings"):
        self.frame, self.table = frame, table

    @property
    def title(self) -> str:
        servers = self.frame["server"].nunique() if len(self.frame) else 0
        return f"Every watch of {self.table}, oldest first: {len(self.frame)} look(s) of {servers} server(s)"

    def rows(self) -> list[dict]:
        def value(v):
            return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

        return [{"at": r["at"], "server": r["server"], "searches": value(r["searches"]), "mean ms": value(r["mean_ms"]),
                 "p95 ms (est.)": value(r["p95_ms"]), "similar assets": value(r["similar_assets"]),
                 "new vectors": value(r["new_vectors"]), "plan": r["plan"], "failed": list(r["failed"]) or None}
                for r in self.frame.to_dict("records")]


def readable(frame, table: str = "ip_asset_embeddings") -> Watches:
    """history()'s DataFrame as a table a person reads (07 shows it under the figure)."""
    return Watches(frame, table)


def _share(live, dead) -> float:
    return dead / (live + dead) if live is not None and dead is not None and live + dead else math.nan


def latest_findings(conn, table: str = "ip_asset_embeddings") -> list[Check]:
    """What doctor and verify say of the newest watch: each server's failed findings as they were
    recorded, a slowdown since the look before, or one pass; nothing when there is no watch."""
    out = []
    for row in latest(conn, table):
        when = f"{row['at']:%Y-%m-%d %H:%M}"
        bad = [f for f in row["findings"] if f["status"] != "pass"]
        for f in bad:
            out.append(Check(f"watch ({row['server']})", f["status"], f"{f['detail']} (pgvkit watch, {when})",
                             f.get("why", ""), f.get("fix", "")))
        if not bad:
            out.append(Check(f"watch ({row['server']})", "pass",
                             f"the newest watch ({when}) found everything within its thresholds"))
    return out
