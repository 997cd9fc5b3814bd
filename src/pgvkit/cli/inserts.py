"""Test inserts: a smoke test that leaves nothing, and tagged bulk loads that can be unloaded."""

from __future__ import annotations

from ..errors import PgvkitError
from ..server.db import connect, require_database_name
from .base import Command, confirm_database_argument, guard, print_json


def _column_dimension(url: str, column: str = "embedding") -> int:
    from ..data.inserts import column_dimension

    with connect(url) as conn:
        return column_dimension(conn, column=column)


def vector_file(path: str, url: str, column: str = "embedding"):
    """The vectors of a .npy / .json / text file, checked against the column's vector(N)."""
    from ..vectors import read_vector_file

    return read_vector_file(path, _column_dimension(url, column))


def _embedding_argument(value: str | None, url: str):
    """--embedding: a '[...]' literal as given (checked by smoke), or the one vector in a file."""
    if value is None or value.lstrip().startswith("["):
        return value
    vectors = vector_file(value, url)
    if len(vectors) != 1:
        raise PgvkitError(f"{value} holds {len(vectors)} vectors; --embedding takes one (use pgvkit load --from for many)")
    return vectors[0]


def _smoke_arguments(p) -> None:
    p.add_argument("--embedding", metavar="VECTOR",
                   help="test with one of your vectors: a '[0.1, ...]' literal or a .npy/.json/.txt file")


def smoke(args, ctx) -> int:
    from ..data.inserts import smoke

    url = ctx.target.url
    report = smoke(url, embedding=_embedding_argument(args.embedding, url), raise_on_failure=False)
    ctx.report(report)
    return 0 if report.ok else 2


def _load_arguments(p) -> None:
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--rows", type=int, help="how many synthetic rows")
    source.add_argument("--from", dest="from_file", metavar="FILE",
                        help="your vectors: .npy (n x dim), .json (list of lists) or text (one [...] per line)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data (default 0)")
    confirm_database_argument(p, "test rows in a live table show up in the application's searches until unloaded")


def load(args, ctx) -> int:
    from ..data.inserts import load

    target = ctx.target
    require_database_name(target, args.confirm_database, "load inserts test rows into the live table",
                          "--confirm-database {name}")
    if args.from_file:
        result = load(target.url, vectors=vector_file(args.from_file, target.url), progress=not ctx.as_json)
    elif args.rows < 1:
        raise PgvkitError("--rows must be a positive number of rows, e.g. --rows 10000")
    else:
        result = load(target.url, args.rows, seed=args.seed, progress=not ctx.as_json)
    if ctx.as_json:
        print_json({"rows": result.rows, "seconds": result.seconds, "rows_per_second": result.rows_per_second,
                    "tag": result.tag})
    else:
        ctx.echo(str(result))
    return 0


def _unload_arguments(p) -> None:
    p.add_argument("--yes", action="store_true", help="confirm: deletes rows")
    confirm_database_argument(p)


def unload(args, ctx) -> int:
    from ..data.inserts import unload

    guard(args, ctx.target, "unload deletes every row pgvkit load tagged")
    n = unload(ctx.target.url)
    print_json({"deleted": n}) if ctx.as_json else ctx.echo(f"deleted {n} loaded rows")
    return 0


COMMANDS = [
    Command("smoke", "insert test rows, read back, search, fire the trigger, then roll back (leaves 0 rows)",
            "pgvkit smoke   or   pgvkit smoke --embedding my_vector.npy", smoke, _smoke_arguments,
            writes=True),
    Command("load", "bulk-load tagged embeddings (synthetic, or yours) with binary COPY",
            "pgvkit load --rows 10000   or   pgvkit load --from vectors.npy", load, _load_arguments,
            writes=True),
    Command("unload", "delete every row pgvkit load inserted (owner_id prefix pgvkit-load-)", "pgvkit unload --yes",
            unload, _unload_arguments, writes=True),
]
