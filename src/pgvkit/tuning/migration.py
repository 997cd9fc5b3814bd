"""Step 7: the migration. The recommendation as the next numbered migration: the new index built
concurrently beside the old one, swapped in, and the query-time setting for the database; its
down file restores the previous index and settings."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

from psycopg import sql

from .. import history
from ..db import connect
from ..errors import PgvkitError
from ..migrations import default_migrations_dir, read_migrations
from .build import SEARCH_PARAM, build_settings
from .recommend import Recommendation

__all__ = ["write_migration"]


def _current_setting(conn, name: str) -> str | None:
    row = conn.execute(
        "SELECT s.opt FROM pg_db_role_setting r, unnest(r.setconfig) AS s(opt)"
        " WHERE r.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND r.setrole = 0 AND s.opt LIKE %s", [name + "=%"]).fetchone()
    return row[0].split("=", 1)[1] if row else None


def _set_database(name: str, value: str | None) -> str:
    action = f"SET {name} = {value}" if value is not None else f"RESET {name}"
    # current_database(): the file stays valid in every environment it is deployed to;
    # touching a vector first loads pgvector, so its settings are known to the server
    return (f"DO $$\nBEGIN\n    PERFORM '[1]'::vector;\n"
            f"    EXECUTE format('ALTER DATABASE %I {action}', current_database());\nEND\n$$;\n")


def _swap(create_definition: str, table: str, index: str, temp: str) -> str:
    return (f"{create_definition.replace(f'INDEX {temp} ON', f'INDEX CONCURRENTLY IF NOT EXISTS {temp} ON')};\n"
            f"-- the old index goes only once the new one is built and valid\n"
            f"DROP INDEX CONCURRENTLY IF EXISTS {index};\n"
            f"ALTER INDEX IF EXISTS {temp} RENAME TO {index};\n")


def write_migration(url: str, recommendation: Recommendation, migrations_dir: str | Path | None = None, *,
                    table: str = "ip_asset_embeddings", index: str = "idx_embedding_cosine") -> tuple[Path, Path]:
    """Write NNN_tune_<index>.sql (replace the index concurrently and set the query-time
    parameter for the database) and its .down.sql (the previous index and settings)."""
    if recommendation.point is None:
        raise PgvkitError("no configuration met the target, so there is no migration to write; "
                          "lower --target-recall or widen the sweep")
    directory = Path(migrations_dir or default_migrations_dir())
    existing = read_migrations(directory)
    with connect(url) as conn:
        recorded = history.applied(conn)  # a version applied here whose file is gone is still taken
    version = max([m.version for m in existing] + list(recorded), default=0) + 1
    name = f"{version:03d}_tune_{index}"
    p = recommendation.point
    with connect(url) as conn:
        old_def = conn.execute(
            "SELECT pg_get_indexdef(c.oid) FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid"
            " WHERE c.relname = %s AND i.indrelid = to_regclass(%s)",
            [index, sql.Identifier(table).as_string(conn)]).fetchone()
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()[0]
        dims = conn.execute("SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                            " AND attname = 'embedding'", [sql.Identifier(table).as_string(conn)]).fetchone()[0]
        old = {param: _current_setting(conn, param) for param in SEARCH_PARAM.values()}
    settings = build_settings(url, p.config, max(rows, 1), dims)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    new_def = (f"CREATE INDEX {index}_next ON {table} USING {p.config.method} (embedding vector_cosine_ops)"
               f" WITH ({', '.join(f'{k} = {v}' for k, v in p.config.params)})")
    up = (f"-- pgvkit:no-transaction\n"
          f"-- Written by pgvkit tune on {stamp}. Measured on {recommendation.workload}:\n"
          f"--   {p.config.label}, {p.search_param} = {p.search_value}: recall@{recommendation.k} {p.recall:.3f}"
          f" (p5 {p.recall_p5:.2f}, fresh queries {p.fresh_recall:.3f}), p95 {p.p95_ms:.2f} ms,"
          f" build {p.build_s:.1f} s, {p.size_bytes / 2**20:.1f} MB\n"
          f"-- Target was recall@{recommendation.k} >= {recommendation.target}.\n\n"
          f"-- queries read the setting when they connect\n"
          + _set_database(p.search_param, str(p.search_value)) +
          f"\n-- sized for {rows:,} rows so the build fits in memory\n"
          + "".join(f"SET {k} = '{v}';\n" for k, v in settings.items())
          + _swap(new_def, table, index, f"{index}_next")
          + "".join(f"RESET {k};\n" for k in settings))
    down = "-- pgvkit:no-transaction\n-- Undo " + name + ": the previous index and query-time settings.\n\n"
    for param, value in old.items():
        down += _set_database(param, value)
    if old_def:
        previous = re.sub(r"^CREATE (UNIQUE )?INDEX \S+ ON (ONLY )?\S+", lambda m: f"CREATE {m.group(1) or ''}INDEX "
                          f"{index}_prev ON {table}", old_def[0])
        down += "\n" + _swap(previous, table, index, f"{index}_prev")
    else:
        down += f"\nDROP INDEX CONCURRENTLY IF EXISTS {index};\n"
    up_path = directory / f"{name}.sql"
    down_path = directory / f"{name}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path
