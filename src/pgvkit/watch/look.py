"""pgvkit watch: one look at production search, on the primary and every standby, recorded.

For each server: what the application's searches cost since the last watch of that server
(`statements`: differences of the server's own statistics), the plan search_assets runs, the
table's dead rows (the primary's statistics), and a bounded recall audit (a sample, under a
time budget). Each look is stored in `pgvkit.watch_snapshots` on the primary with the server
it ran on; a finding past a threshold makes the exit code 2, each said in one line with its fix.

The statistics are read before the audit and again after it: the second reading is the baseline
the next watch differences against, so the audit's own searches never count as the
application's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from .. import search
from ..checks import Check
from ..display import Echo, Table, echo_to
from ..errors import PgvkitError
from ..server.db import connect, label, mask_url
from ..server.sessions import read_only
from . import statements
from .history import ensure_table, last, record_snapshot
from .statements import Interval, Reading

__all__ = ["Snapshot", "Watch", "watch", "Thresholds", "findings"]



@dataclass(frozen=True)
class Thresholds:
    target: float = 0.95  # recall@k each shape must reach
    p95_ms: float = 100.0  # search_assets' estimated p95 (its mean when that is all the server gives)
    dead_share: float = 0.2  # dead rows / all rows of the table, before VACUUM
    slower: float = 3.0  # p95 this many times the last watch's (and 5 ms more) is a finding


@dataclass
class Snapshot:
    """One server's look."""

    server: str
    standby: bool
    at: datetime
    interval: Interval
    plan: str | None
    index: str | None
    settings: dict
    live_rows: int | None = None
    dead_rows: int | None = None
    recall: dict = field(default_factory=dict)  # shape -> recall, and "queries", "note"
    findings: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline: dict = field(default_factory=dict)
    recorded: bool = False

    @property
    def search(self) -> dict:
        figures = self.interval.figures()  # per statement when the server shows them (pgvkit's own left out),
        return figures.get("search_assets") or figures.get("function") or {}  # else the function's own calls

    @property
    def dead_share(self) -> float | None:
        total = (self.live_rows or 0) + (self.dead_rows or 0)
        return self.dead_rows / total if self.dead_rows is not None and total else None

    def to_dict(self) -> dict:
        return {"server": self.server, "standby": self.standby, "at": self.at.isoformat(),
                "interval_s": round(self.interval.seconds, 3), "searches": self.interval.figures(),
                "plan": self.plan, "index": self.index, "settings": self.settings, "live_rows": self.live_rows,
                "dead_rows": self.dead_rows, "recall": self.recall, "recorded": self.recorded,
                "findings": [vars(c) for c in self.findings], "notes": self.notes}


@dataclass(repr=False)
class Watch(Table):
    """A watch of every server: a row each; its findings under the table."""

    table: str = "ip_asset_embeddings"
    snapshots: list[Snapshot] = field(default_factory=list)
    columns = ("server", "since last", "searches", "mean ms", "p95 ms (est.)", "plan", "dead rows", "similar",
               "new", "status")
    colour_by = "status"

    @property
    def failed(self) -> list[Check]:
        return [c for s in self.snapshots for c in s.findings if c.status == "fail"]

    @property
    def exit_code(self) -> int:
        return 2 if self.failed else 0

    @property
    def title(self) -> str:
        bad = self.failed
        return (f"Watch of {self.table}: " + (f"{len(bad)} finding(s) past a threshold" if bad else "all within bounds"))

    @property
    def notes(self) -> list[str]:
        return [f"{s.server}: {n}" for s in self.snapshots for n in s.notes] + [
            f"{s.server}: {c.detail}; fix: {c.fix}" for s in self.snapshots for c in s.findings if c.status != "pass"]

    def rows(self) -> list[dict]:
        out = []
        for s in self.snapshots:
            found = s.search
            status = "fail" if any(c.status == "fail" for c in s.findings) else (
                "warn" if any(c.status == "warn" for c in s.findings) else "pass")
            out.append({"server": s.server, "since last": f"{s.interval.seconds:,.0f} s" if s.interval.seconds else "-",
                        "searches": found.get("calls", "-"), "mean ms": found.get("mean_ms") or "-",
                        "p95 ms (est.)": found.get("p95_ms_est") or "-", "plan": s.plan or "unknown",
                        "dead rows": "-" if s.dead_share is None else f"{s.dead_share:.0%}",
                        "similar": _shown(s.recall.get("similar_assets")), "new": _shown(s.recall.get("new_vectors")),
                        "status": status})
        return out

    def to_dict(self) -> dict:
        return {"table": self.table, "exit_code": self.exit_code, "servers": [s.to_dict() for s in self.snapshots]}


def _shown(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def watch(url: str, standbys: list[str] = (), *, table: str = "ip_asset_embeddings", sample: int = 200,
          queries=None, k: int = 10, recall_budget: float = 120.0, thresholds: Thresholds = Thresholds(),
          record: bool = True, echo: Echo | None = None) -> Watch:
    """Look at the primary (`url`) and each standby; record every look on the primary.
    `sample` rows (0: no recall audit) and `queries` (new vectors) measure recall within
    `recall_budget` seconds a server."""
    from ..server.pooler import require_session

    require_session(url, mask_url(url), "pgvkit watch")  # its advisory lock is a session's
    echo = echo or echo_to()
    result = Watch(table=table)
    with connect(url, application_name="pgvkit watch") as primary:
        if primary.execute("SELECT pg_is_in_recovery()").fetchone()[0]:
            raise PgvkitError("pgvkit watch records on the primary: point --database-url (or DATABASE_URL) at the "
                              "primary and name standbys with --standby URL")
        held = primary.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [f"pgvkit watch {table}"]).fetchone()[0]
        primary.commit()
        if not held:  # two at once would difference against the same baseline and count an interval twice
            raise PgvkitError(f"another pgvkit watch of {table} is running on this database (pg_stat_activity: "
                              "application_name 'pgvkit watch'); this one stops: let the schedule's next run look")
        ready = record and ensure_table(primary)
        for where in [url, *standbys]:
            echo(f"watching {label(where)} ...")
            snap = _look(where, primary, table, sample=sample, queries=queries, k=k, budget=recall_budget,
                         thresholds=thresholds, standby=where != url)
            if ready:
                snap.recorded = record_snapshot(primary, snap, table)
            result.snapshots.append(snap)
        if record and not ready:
            why = read_only(primary)
            for snap in result.snapshots:
                snap.notes.append(f"not recorded: {why[0]} ({why[1]})" if why else
                                  "not recorded: this role may not create or write pgvkit.watch_snapshots (GRANT "
                                  "USAGE, CREATE ON SCHEMA pgvkit, or run pgvkit migrate once as its owner)")
    return result


def _server_name(conn, standby: bool) -> str:
    if not standby:
        return "primary"
    name, port = conn.execute("SELECT current_setting('cluster_name'), current_setting('port')").fetchone()
    host = conn.info.host if conn.info.host and not conn.info.host.startswith("/") else "local"
    return f"standby {name}" if name else f"standby {host}:{port}"


def _look(url: str, primary, table: str, *, sample: int, queries, k: int, budget: float, thresholds: Thresholds,
          standby: bool) -> Snapshot:
    with connect(url, application_name="pgvkit watch") as conn:
        name = _server_name(conn, standby)
        before = last(primary, table, name)
        now = statements.read(conn, table)
        interval = statements.difference(now, Reading.from_baseline(before["baseline"]) if before else None)
        live = _index(conn, table)
        settings = search.settings(conn) if search.exists(conn) else {}
        snap = Snapshot(name, standby, now.at, interval, _plan(conn, table), live, settings,
                        notes=[*now.unseen, *interval.notes])
        if not standby:
            snap.live_rows, snap.dead_rows = _dead(conn, table)
    if sample:
        snap.recall = _recall(url, table, sample, queries, k, budget, thresholds.target, record=not standby)
    with connect(url, application_name="pgvkit watch") as conn:
        snap.baseline = statements.read(conn, table).baseline()  # after the audit: its searches are not the app's
    snap.findings = findings(snap, before, thresholds, table)
    return snap


def _index(conn, table: str) -> str | None:
    from ..indexes import searched_index

    found = searched_index(conn, table)
    return found.definition if found else None


def _plan(conn, table: str) -> str | None:
    """What a search scans: "index <name>" or "sequential scan" (None: no row to search with)."""
    from ..indexes import plan_index

    row = conn.execute(sql.SQL("SELECT embedding FROM {} WHERE embedding IS NOT NULL LIMIT 1").format(
        sql.Identifier(table))).fetchone()
    conn.commit()
    if row is None:
        return None
    if table == "ip_asset_embeddings" and search.exists(conn):
        found = search.nested_plan(conn, row[0], 10)
        if found is not None:
            scans = search._index_scans(found["Plan"])
            return f"index {', '.join(scans)}" if scans else "sequential scan"
    with conn.transaction(force_rollback=True):  # without auto_explain: the statement, with the function's settings
        for name, value in (search.settings(conn) if search.exists(conn) else {}).items():
            conn.execute("SELECT set_config(%s, %s, true)", [name, value])
        index, _ = plan_index(conn, sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %(q)s LIMIT 10").format(
            sql.Identifier(table)), {"q": row[0]})
    return f"index {index}" if index else "sequential scan"


def _dead(conn, table: str) -> tuple[int | None, int | None]:
    with conn.transaction():
        row = conn.execute("SELECT sum(n_live_tup), sum(n_dead_tup) FROM pg_stat_all_tables WHERE relid = %s::regclass"
                           " OR relid IN (SELECT relid FROM pg_partition_tree(%s::regclass) WHERE isleaf)",
                           [sql.Identifier(table).as_string(conn)] * 2).fetchone()
    return (int(row[0]), int(row[1])) if row[0] is not None else (None, None)


def _recall(url: str, table: str, sample: int, queries, k: int, budget: float, target: float, *,
            record: bool) -> dict:
    from ..audit.recall import audit

    try:
        with connect(url) as conn:
            rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        if rows == 0:
            return {"note": "not measured: the table is empty"}
        found = audit(url, table=table, k=k, sample=min(sample, rows), queries=queries, target=target,
                      statement_timeout=f"{int(budget * 1000)}ms", record=record, progress=False, echo=lambda _: None)
    except psycopg.errors.QueryCanceled:
        return {"note": f"not measured: it took longer than --recall-budget {budget:g} s (raise it, or lower --sample)"}
    except PgvkitError as exc:
        return {"note": f"not measured: {exc}"}
    out = {name: round(s.recall, 4) for name, s in found.shapes.items()}
    out["queries"] = {name: s.queries for name, s in found.shapes.items()}
    if queries is None:
        out["note"] = "new vectors not measured: give --query-file (embeddings of images not in the table)"
    return out


SHORT = {"similar_assets": "similar assets", "new_vectors": "new vectors"}
_FIX_RECALL = "pgvkit confirm --write-migration, then pgvkit migrate (pgvkit tune when no setting of this index reaches it)"


def findings(snap: Snapshot, before: dict | None, t: Thresholds, table: str = "ip_asset_embeddings") -> list[Check]:
    """What the look found, each a Check (fail: past a threshold; warn: worth a look)."""
    out = []
    for shape, name in SHORT.items():
        r = snap.recall.get(shape)
        if r is not None:
            ok = r >= t.target
            out.append(Check(f"recall {name}", "pass" if ok else "fail",
                             f"recall of {name} {r:.3f} {'meets' if ok else 'is below'} the target {t.target}",
                             "" if ok else "the index misses neighbours an exact search finds", "" if ok else _FIX_RECALL))
    out += _plan_findings(snap, before, table)
    figures = snap.search
    p95 = figures.get("p95_ms_est") or figures.get("mean_ms")
    what = "p95 (est.)" if figures.get("p95_ms_est") else "mean"
    seq = snap.plan == "sequential scan"
    if p95 is not None and figures.get("calls"):
        over = p95 > t.p95_ms
        out.append(Check("search latency", "fail" if over else "pass",
                         f"search_assets {what} {p95:.1f} ms over {figures['calls']:,} searches "
                         f"({'above' if over else 'within'} the budget {t.p95_ms:g} ms)",
                         "the application's searches take longer than their budget" if over else "",
                         (_SEQ_FIX if seq else "pgvkit confirm --write-migration (a lower ef_search or probes meeting "
                          "the target), then pgvkit migrate; pgvkit doctor for locks and bloat") if over else ""))
        old = ((before or {}).get("searches") or {}).get("search_assets") or {}
        was = old.get("p95_ms_est") or old.get("mean_ms")
        if was and p95 >= t.slower * was and p95 - was >= 5:
            became = (f" when the plan became a {snap.plan}" if before.get("plan") and before["plan"] != snap.plan
                      else "")
            out.append(Check("slower searches", "warn",
                             f"searches got slower since {before['at']:%Y-%m-%d %H:%M}: {what} {was:.1f} ms -> "
                             f"{p95:.1f} ms{became}", "", _SEQ_FIX if seq else
                             "pgvkit doctor (locks, bloat, a standby's lag), then pgvkit recall"))
    share = snap.dead_share
    if share is not None:
        over = share > t.dead_share
        out.append(Check("dead rows", "fail" if over else "pass",
                         f"{table} has {share:.0%} dead rows ({snap.dead_rows:,} of "
                         f"{snap.dead_rows + snap.live_rows:,}) not yet vacuumed" + (
                             f" (threshold {t.dead_share:.0%})" if over else ""),
                         "index searches skip dead rows, so they return fewer neighbours until VACUUM" if over else "",
                         f"VACUUM (ANALYZE) {table}; then pgvkit doctor (why autovacuum lags)" if over else ""))
    return out


_SEQ_FIX = ("pgvkit confirm --write-migration (settings the index serves at this size; ALTER FUNCTION search_assets "
            "RESET a setting someone raised by hand), then pgvkit migrate")


def _plan_findings(snap: Snapshot, before: dict | None, table: str) -> list[Check]:
    was = (before or {}).get("plan")
    changed = f" (it was {was} at the last watch, {before['at']:%Y-%m-%d %H:%M})" if was and was != snap.plan else ""
    if snap.plan is None:
        return []
    if snap.plan != "sequential scan":
        return [Check("search plan", "warn" if changed else "pass", f"searches use the {snap.plan}{changed}")]
    bound = ", ".join(f"{k} = {v}" for k, v in snap.settings.items() if k.endswith(("ef_search", "probes")))
    if snap.index and (snap.live_rows or 0) < search.SEQ_SCAN_FAIL_ROWS and not changed:  # as verify: reading a few rows is right
        return [Check("search plan", "warn", f"search_assets' plan is a sequential scan{changed}: the planner prefers "
                      f"reading {snap.live_rows or 0:,} rows whole at this size to the vector index",
                      "below 10,000 rows an exact scan is as fast as the index, and exact",
                      "nothing to do on a small table; on a large one, " + _SEQ_FIX)]
    if snap.index:
        return [Check("search plan", "fail", f"search_assets' plan is a sequential scan{changed}: the planner does "
                      f"not use the vector index{' with ' + bound if bound else ''}, so every search reads the table",
                      "the planner costs the index above the table at this size with these settings", _SEQ_FIX)]
    return [Check("search plan", "fail" if (snap.live_rows or 0) >= search.SEQ_SCAN_FAIL_ROWS else "warn",
                  f"{table} has no vector index: every search is a sequential scan{changed}",
                  "an exact scan grows with the table",
                  "pgvkit tune --write-migration (it measures and writes the index), then pgvkit migrate")]
