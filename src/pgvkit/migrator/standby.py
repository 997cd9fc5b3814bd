"""Hot standbys: an embedded one for rehearsals and tests, and what the kit needs of any standby.

`EmbeddedStandby` is a streaming-replication standby of the embedded server, made from the same
wheel with `pg_basebackup -R` into its own data directory (`.pgvkit/standby/pgdata`), listening on
its own Unix socket only, like the primary. `standby_urls()` names the standbys once:
`--standby URL` (repeatable), else `PGVKIT_STANDBY_URLS` (comma-separated), else the embedded
standby when it runs and the target is the embedded primary. `replay()` reads what a standby has
replayed; `wait_for_replay()` waits until every standby has replayed the primary's WAL position;
`check_standbys()` is what status and verify report for each.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psycopg

from ..checks import Check
from ..display import Echo, echo_to, progress_bar
from ..errors import EmbeddedServerError, PgvkitError
from ..server.db import connect, mask_url
from ..server.embedded import EmbeddedServer

__all__ = ["EmbeddedStandby", "StandbyNotReady", "Replay", "standby_urls", "replay", "wait_for_replay",
           "check_standby", "check_standbys", "feedback_warnings", "STANDBY_PORT", "ENV"]

STANDBY_PORT = 5433  # the standby's socket file: .s.PGSQL.5433 in its own directory
ENV = "PGVKIT_STANDBY_URLS"
FEEDBACK_FIX = ("on the standby: ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf(); "
                "(docs/how-to/standbys.md)")


class StandbyNotReady(PgvkitError):
    """A standby is unreachable, or has not replayed the primary's position in time."""


class EmbeddedStandby(EmbeddedServer):
    """A hot standby of an embedded primary, in `primary.home / name`."""

    socket_port = STANDBY_PORT
    # without it the primary's cleanup can remove row versions a standby search still sees; a
    # search waiting on a replayed DROP INDEX lock then waits out max_standby_streaming_delay
    # and is cancelled ("conflict with recovery"), which pgvkit tune's index swap would cause
    settings = (*EmbeddedServer.settings, "hot_standby_feedback = on")

    def __init__(self, primary: EmbeddedServer, name: str = "standby"):
        super().__init__(primary.home / name, database=primary.database, user=primary.user, bindir=primary.bindir)
        self.primary = primary

    def start(self) -> EmbeddedStandby:
        """Clone the primary with pg_basebackup -R on first use (the primary must run), then start."""
        with self._lock():
            if not self.initialised:
                if not self.primary.running():
                    raise EmbeddedServerError("the embedded primary is not running; start it first: pgvkit db start")
                self._basebackup()
            if not self.running():
                self._start()
        return self

    def _basebackup(self) -> None:
        self.pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._prepare_ownership(self.pgdata)
        self._run([str(self._bin("pg_basebackup")), "-D", str(self.pgdata), "-R", "-X", "stream", "-c", "fast",
                   "-h", str(self.primary.socket_dir), "-p", str(self.primary.socket_port), "-U", self.primary.user,
                   "--no-password"])
        (self.pgdata / "server.log").unlink(missing_ok=True)  # the primary's log came with the copy


@dataclass
class Replay:
    """What one standby has replayed, against the primary's current WAL position."""

    url: str  # masked
    in_recovery: bool
    lag_bytes: int | None
    lag_seconds: float | None
    error: str | None = None

    def to_dict(self) -> dict:
        return {"url": self.url, "in_recovery": self.in_recovery, "lag_bytes": self.lag_bytes,
                "lag_seconds": self.lag_seconds, "error": self.error}


def standby_urls(target_url: str | None = None, given: list[str] | None = None) -> list[str]:
    """--standby URLs, else $PGVKIT_STANDBY_URLS, else the embedded standby when it runs and the
    target is the embedded primary."""
    if given:
        return list(given)
    env = os.environ.get(ENV, "")
    if env.strip():
        return [u.strip() for u in env.split(",") if u.strip()]
    primary = EmbeddedServer.default()
    standby = EmbeddedStandby(primary)
    # the URL first: a target elsewhere never touches the embedded server (its pg_ctl may not even be runnable here)
    if target_url and target_url == primary.url() and primary.running() and standby.running():
        return [standby.url()]
    return []


def _position(conn) -> str:
    return conn.execute("SELECT pg_current_wal_lsn()").fetchone()[0]


def replay(primary_url: str, url: str, position: str | None = None) -> Replay:
    """A standby's replay lag in bytes (against `position`, else the primary's current WAL
    position) and seconds (since the last replayed transaction, when one is behind)."""
    if position is None:
        with connect(primary_url, autocommit=True) as conn:
            position = _position(conn)
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT pg_is_in_recovery(), pg_wal_lsn_diff(%s::pg_lsn, pg_last_wal_replay_lsn()),"
                " extract(epoch FROM now() - pg_last_xact_replay_timestamp())", [position]).fetchone()
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return Replay(mask_url(url), False, None, None, first[:200])
    in_recovery, lag, seconds = row
    lag = max(0, int(lag)) if lag is not None else None
    return Replay(mask_url(url), in_recovery, lag, (float(seconds) if lag else 0.0) if seconds is not None else None)


def wait_for_replay(primary_url: str, urls: list[str], timeout: float = 300.0, *, progress: bool = True,
                    echo: Echo | None = None) -> list[Replay]:
    """Wait until every standby has replayed the primary's current WAL position (polled every
    0.2 s), up to `timeout` seconds; one line each when it has, and StandbyNotReady naming the
    standby and its lag when one has not, or cannot be reached."""
    echo = echo or echo_to()
    with connect(primary_url, autocommit=True) as conn:
        position = _position(conn)
    deadline = time.monotonic() + timeout
    done: list[Replay] = []
    for url in urls:
        bar = None  # shown only while the standby is behind
        try:
            while True:
                state = replay(primary_url, url, position)
                if state.error is not None:
                    raise StandbyNotReady(f"standby {state.url} cannot be reached ({state.error}); the primary is "
                                          "migrated: start the standby, or pass --wait-standbys 0 to skip the wait")
                if state.lag_bytes == 0:
                    break
                if time.monotonic() >= deadline:
                    raise StandbyNotReady(
                        f"standby {state.url} has not replayed the migration after {timeout:.0f} s ({state.lag_bytes:,}"
                        " bytes behind): the primary is migrated; check the standby's log and pgvkit status, or raise "
                        "--wait-standbys")
                if bar is None:  # (a tqdm without a total has no truth value)
                    bar = progress_bar(total=None, desc=f"standby {state.url} replaying", unit="poll",
                                       enabled=progress, leave=False)
                bar.set_postfix_str(f"{state.lag_bytes:,} bytes behind", refresh=True)
                time.sleep(0.2)
        finally:
            if bar is not None:
                bar.close()
        done.append(state)
        echo(f"standby {state.url}: replayed (lag 0 bytes)")
    return done


def _feedback(conn) -> bool:
    return conn.execute("SHOW hot_standby_feedback").fetchone()[0] == "on"


def feedback_warnings(primary_url: str, urls: list[str], migrations) -> list[str]:
    """One line per standby with hot_standby_feedback off, when a pending migration takes an
    exclusive lock (DROP INDEX, ALTER TABLE, ...): replayed there, searches wait behind the lock,
    and the primary's cleanup of row versions they still see cancels them after
    max_standby_streaming_delay. A standby that cannot be reached is left to the replay wait."""
    from . import history
    from .status import pending

    with connect(primary_url) as conn:
        rows = history.applied(conn)
    locking = [m for m in pending(migrations, rows) if any(st.locks_readers for st in m.up.statements)]
    if not locking:
        return []
    lines = []
    for url in urls:
        try:
            with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                if _feedback(conn):
                    continue
        except psycopg.Error:
            continue
        lines.append(f"warning: standby {mask_url(url)} has hot_standby_feedback off: {locking[0].id} takes an "
                     "exclusive lock its searches wait behind there, and they can be cancelled (conflict with "
                     f"recovery) while they wait; {FEEDBACK_FIX}")
    return lines


def _versions(conn) -> list[int] | None:
    """The applied versions in pgvkit's history as this server has it (None: no history)."""
    if conn.execute("SELECT to_regclass('pgvkit.schema_migrations')").fetchone()[0] is None:
        return None
    return [r[0] for r in conn.execute(
        "SELECT version FROM pgvkit.schema_migrations WHERE status IN ('applied', 'baselined') ORDER BY version")]


def _caught_up(primary_url: str, url: str, grace: float = 3.0) -> Replay:
    """The standby's lag against the primary's WAL position now, given `grace` seconds to replay it:
    reading the catalogs after a migration prunes their pages on the primary (WAL the standby
    replays within milliseconds), so a lag seen once is not yet a standby behind."""
    with connect(primary_url, autocommit=True) as conn:
        position = _position(conn)
    deadline = time.monotonic() + grace
    state = replay(primary_url, url, position)
    while state.error is None and state.lag_bytes and time.monotonic() < deadline:
        time.sleep(0.1)
        state = replay(primary_url, url, position)
    return state


def check_standby(primary_url: str, url: str, table: str = "ip_asset_embeddings") -> tuple[Check, dict]:
    """One standby against its primary: in recovery, replay lag in bytes and seconds, the
    migration history as replayed, the search index present and valid, the search settings its
    searches get. A pass, a warning naming the fix, or a failure when it cannot be reached."""
    from ..indexes import search_index
    from ..search import effective_settings

    state = _caught_up(primary_url, url)
    name = f"standby {state.url}"
    data = state.to_dict()
    if state.error is not None:
        return Check(name, "fail", f"cannot be reached ({state.error})", "searches sent there fail",
                     f"start it, or take it out of --standby / {ENV}"), data
    with connect(primary_url) as conn:
        primary_versions = _versions(conn)
    with psycopg.connect(url, connect_timeout=5) as conn:
        versions = _versions(conn)
        try:
            index = search_index(conn, table)
        except PgvkitError as exc:  # two of them: verify on the primary says which to drop
            index, data["index_error"] = None, str(exc)
        settings = effective_settings(conn, ("ivfflat.probes", "hnsw.ef_search"), table) if index else {}
        feedback = _feedback(conn)
    data.update(history=versions, index=index.name if index else None, index_valid=bool(index and index.valid),
                settings=settings, hot_standby_feedback=feedback)
    shown = ", ".join(f"{k} = {v}" for k, v in settings.items() if v) or "no search settings"
    problems = []
    if not state.in_recovery:
        problems.append("not in recovery: it is a primary now (promoted?), and no longer follows this one")
    if state.lag_bytes:
        problems.append(f"{state.lag_bytes:,} bytes behind ({state.lag_seconds or 0:.1f} s since its last replayed "
                        "transaction)")
    if versions != primary_versions:
        problems.append(f"history as replayed: {versions}, the primary has {primary_versions}")
    if index is None:
        problems.append(f"no valid index a search of {table} can use")
    if problems:
        return Check(name, "warn", "; ".join(problems), "the application's searches there see another schema or "
                     "index than the primary's", "wait for it to replay (pgvkit migrate waits: --wait-standbys), and "
                     "check replication on the primary (SELECT * FROM pg_stat_replication)"), data
    if not feedback:
        return Check(name, "warn", "hot_standby_feedback is off", "a search there that waits behind a replayed DROP "
                     "INDEX (pgvkit tune's index swap) or ALTER TABLE can be cancelled (conflict with recovery)",
                     FEEDBACK_FIX), data
    return Check(name, "pass", f"in recovery, replayed (0 bytes behind); history {versions} as on the primary; "
                 f"{index.name} ({index.method}{'' if index.kind.direct else ', ' + index.kind.name}) valid; "
                 f"{shown}"), data


def check_standbys(primary_url: str, urls: list[str], table: str = "ip_asset_embeddings") -> tuple[list[Check],
                                                                                                    list[dict]]:
    """check_standby for each; the checks and their data (for --json's standbys list)."""
    found = [check_standby(primary_url, url, table) for url in urls]
    return [c for c, _ in found], [d for _, d in found]
