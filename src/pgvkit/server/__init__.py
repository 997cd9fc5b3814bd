"""The server pgvkit talks to: the embedded PostgreSQL it starts and sizes for its machine
(embedded, machine), the one rule that picks a database and masks its URL wherever it is shown
(db), sessions, role-level timeouts and poolers in front (sessions, timeouts, pooler), what the
server's errors mean and how to fix them (explain), backups with pg_dump (backups), and an index
build's progress (buildprogress).

Everything else stands on this package; it stands on the ground modules only."""

__all__ = ["backups", "buildprogress", "db", "embedded", "explain", "machine", "pooler", "sessions", "timeouts"]
