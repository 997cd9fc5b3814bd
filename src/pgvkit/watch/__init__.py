"""Watching production search: a look at pg_stat_statements, the live plan, settings and a
recall sample on every server (look, statements), the snapshots kept in pgvkit.watch_snapshots
(history), and the figures of notebook 07 (plots)."""

__all__ = ["history", "look", "plots", "statements"]
