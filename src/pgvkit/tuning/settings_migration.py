"""pgvkit confirm's choice as the next numbered migration (one transaction): the chosen settings
and search.INDEX_ONLY bound to search_assets, the search setting as the database's default for
direct queries, the index's comment saying it was confirmed; the owners' own search setting with
the one line of search_assets' body that applies it, when the body lacks it. Its down file binds
back what was there."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from .. import search
from ..errors import PgvkitError
from ..kinds import KINDS, OWNER_SETTING, function_sql
from ..server.db import connect
from .build import SEARCH_PARAM
from .confirm import CONFIRM_WRITTEN
from .confirmation import Confirmation
from .migration import _comment, _current_setting, _function_now, _other_models, _set_database, _set_function, \
    all_applied, version_after

__all__ = ["write_settings_migration"]


def write_settings_migration(url: str, result: Confirmation, migrations_dir: str | Path | None = None) -> tuple[Path, Path]:
    """NNN_confirm_search_settings.sql (one transaction) binding the chosen settings and
    search.INDEX_ONLY to search_assets (and the search setting as the database default, for
    direct queries of a vector index), with its down file binding back what was there."""
    if not result.met:
        raise PgvkitError("confirm found no setting that meets the target, so there is nothing to bind; "
                          + result.message)
    with connect(url) as conn:
        directory, existing, recorded = all_applied(conn, migrations_dir, "confirm measured the index that stands now",
                                                    "confirm again")
        if search.settings(conn) != result.bound_before:
            raise PgvkitError("search_assets' settings changed since confirm measured them; run pgvkit confirm again")
        param = SEARCH_PARAM[result.method]
        database_before = _current_setting(conn, param)
        changes = {**result.chosen, **search.INDEX_ONLY}
        changes.update({g: None for g in OWNER_SETTING.values() if g in result.bound_before and g not in changes})
        own = next((p for p, g in OWNER_SETTING.items() if changes.get(g)), None)
        rewrite = ""  # an owners' setting that search_assets' body does not apply yet: the body, written with it
        if own is not None:
            others = _other_models(conn, result.table)
            written = search.written_as(conn, result.table, KINDS[result.kind], result.dims, others)
            if written is None:
                raise PgvkitError("search_assets changed since confirm measured it; run pgvkit confirm again")
            if written[1] != own:
                rewrite = ("-- search_assets: owners searched through the index run at " + OWNER_SETTING[own]
                           + " (one line more in its body; every setting bound here)\n"
                           + function_sql(conn, KINDS[result.kind], result.dims,
                                          {k: v for k, v in {**result.bound_before, **changes}.items() if v is not None},
                                          written[0], others, own))
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
        at = result.chosen_measurements()
        figures = "\n".join(f"--   {m.shape}: recall@{result.k} {m.recall:.4f} over {len(m.per_query)} queries, "
                            f"p95 {m.p95_ms:.2f} ms, {m.plan}" for m in at)
        name = f"{version_after(existing, recorded):03d}_confirm_search_settings"
        up = (f"-- {name}: search settings measured on the live index at full size\n"
              f"{CONFIRM_WRITTEN}{stamp} on {result.rows_in_table:,} rows of {result.table}, against exact neighbours "
              f"of the whole table:\n--   {result.index}\n{figures}\n"
              f"-- Target was recall@{result.k} >= {result.target}"
              + (f"; pgvkit tune {result.predicted}" if result.predicted else "") + ".\n"
              "-- enable_seqscan = off: searches take the index at every size (the planner may prefer to read the\n"
              "-- whole table at some settings, which is exact and tens of times slower).\n\n"
              + (rewrite or "".join(_set_function(conn, name_, value) for name_, value in changes.items()))
              + "\n-- the index says it was confirmed (pgvkit verify reads it)\n"
              + _comment(conn, *result.index_name, (result.index_comment or "").split("; confirmed at")[0]
                         + f"; confirmed at {result.rows_in_table:,} rows: "
                         + ", ".join(f"{a} = {b}" for a, b in result.chosen.items() if b))
              + ("" if not _direct(result) else
                 "\n-- direct ORDER BY embedding <=> ... queries read the database's default\n"
                 + _set_database(conn, param, result.chosen[param])))
        down = (f"-- Undo {name}: search_assets' settings as they were.\n\n"
                + (("-- search_assets as it was, its settings with it\n" + _function_now(conn)) if rewrite else
                   "".join(_set_function(conn, name_, result.bound_before.get(name_)) for name_ in changes))
                + _comment(conn, *result.index_name, result.index_comment)
                + ("" if not _direct(result) else _set_database(conn, param, database_before)))
    up_path, down_path = directory / f"{name}.sql", directory / f"{name}.down.sql"
    up_path.write_text(up)
    down_path.write_text(down)
    return up_path, down_path


def _direct(result: Confirmation) -> bool:
    """Whether direct ORDER BY embedding <=> ... queries use the index (a vector one)."""
    return "vector_cosine_ops" in result.index
