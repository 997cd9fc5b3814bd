"""Index tuning: sweep candidates on a scratch copy, recommend one, write it as a migration."""

from __future__ import annotations

import argparse

from ..errors import PgvkitError
from ..server.db import connect
from .base import Command, print_json
from .inserts import vector_file


def _tune_arguments(p) -> None:
    p.add_argument("--target-recall", type=float, default=0.95, metavar="R", help="recall@k to reach (default 0.95)")
    p.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--rows", type=int, help="sample size (default: the whole table up to 100,000 rows; above that a sample of 100,000 and two "
                        "nested smaller ones, recall carried to the table's size; 20,000 synthetic)")
    p.add_argument("--queries", type=int, default=200, help="held-out queries (default 200, plus as many fresh)")
    p.add_argument("--source", choices=["auto", "table", "synthetic"], default="auto",
                   help="the live table's vectors (auto: when it has >= 1000 rows) or synthetic ones")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--filter-owner", metavar="OWNER_ID",
                   help="also measure filtered recall (WHERE owner_id = OWNER_ID) with iterative scans off and on; "
                        "auto: the most frequent owner")
    p.add_argument("--shape", choices=["both", "new", "similar"], default="both",
                   help="which searches must meet the target: new vectors (not in the table), similar assets "
                        "(rows of the table, each left out of its answer), or both (default)")
    p.add_argument("--query-file", metavar="FILE",
                   help="the application's own new-vector queries (.npy, .json, one [...] per line), split into "
                        "held-out and fresh halves")
    p.add_argument("--candidates", metavar="KINDS",
                   help="index kinds to try, comma-separated: vector, halfvec (half the size), binary "
                        "(binary quantization + re-rank by cosine, tens of times smaller); default all, or on a "
                        "table larger than the sample only vector unless --allow-query-change")
    p.add_argument("--memory-budget", metavar="SIZE", default="auto",
                   help="memory the index may take at the live table's size, e.g. 2GB; larger candidates are left "
                        "out (default: what effective_cache_size leaves beside the table; 'none': no limit)")
    p.add_argument("--write-migration", action="store_true",
                   help="write the recommendation as the next numbered migration (and its down file)")
    p.add_argument("--cleanup", action="store_true",
                   help="only drop what a killed tuning run left (pgvkit.tune_workload, its candidate indexes) and exit")
    p.add_argument("--allow-query-change", action="store_true",
                   help="let the recommendation and its migration change the index kind (halfvec, binary): only "
                        "search_assets can use such an index, direct ORDER BY embedding <=> ... queries lose theirs "
                        "(without it, only vector indexes are recommended)")
    p.add_argument("--hnsw", metavar="M:EF[,M:EF]", type=_graphs,
                   help="the HNSW graphs to build, as m:ef_construction pairs (default 16:64,24:100; a denser graph "
                        "for a hard table: 32:200)")
    p.add_argument("--model", metavar="NAME",
                   help="during a model change, before its index is built: tune the second model's HNSW index on "
                        "the rows that have its embedding (its name or column; pgvkit model list), with --query-file "
                        "of its dimension; --write-migration writes it as pgvkit model index would, with the "
                        "settings found")


def tune(args, ctx) -> int:
    from .. import tuning
    from ..kinds import parse_candidates
    from ..memory import parse_size

    if not 0 < args.target_recall <= 1:
        raise PgvkitError("--target-recall must be between 0 and 1, e.g. --target-recall 0.95")
    if args.k < 1 or args.queries < 2 or (args.rows is not None and args.rows < args.k + 1):
        raise PgvkitError("--k and --queries must be positive and --rows larger than k, e.g. --k 10 --rows 20000")
    url, echo = ctx.target.url, ctx.echo
    if args.cleanup:
        with connect(url) as conn:
            left = tuning.scratch_copy.leftover(conn)
        tuning.cleanup(url)  # refused in one line while a run holds the lock
        echo(f"dropped {left.detail.split(' was left')[0]}" if left.status == "warn" else "nothing to clean up")
        return 0
    shapes = ("new", "similar") if args.shape == "both" else (args.shape,)
    candidates = parse_candidates(args.candidates) if args.candidates else None
    budget = args.memory_budget.strip().lower()
    budget = budget if budget in ("auto", "none") else parse_size(args.memory_budget)
    model = _second_model(url, args.model) if args.model else None
    column = model.column if model is not None else "embedding"
    query_vectors = vector_file(args.query_file, url, column) if args.query_file else None
    if args.write_migration and model is None:  # before the sweep, not after minutes of it
        tuning.refuse_stacking(url, ctx.migrations_dir)
    grid = {"hnsw": args.hnsw} if args.hnsw else None
    _, result, rec = tuning.tune(url, target=args.target_recall, k=args.k, rows=args.rows, queries=args.queries,
                                 source=args.source, seed=args.seed, filter_owner=args.filter_owner, shapes=shapes,
                                 query_vectors=query_vectors, candidates=candidates, grid=grid,
                                 memory_budget=None if budget == "none" else budget,
                                 query_change=args.allow_query_change, progress=not ctx.as_json,
                                 column=column, echo=echo)
    written, refused = None, None
    if args.write_migration and rec.met and model is not None:
        from ..models.change import write_index

        written = write_index(url, model.column, ctx.migrations_dir, recommendation=rec)
    elif args.write_migration and (rec.met or rec.below is not None):  # below the target: confirm decides
        try:
            written = tuning.write_migration(url, rec, ctx.migrations_dir, allow_query_change=args.allow_query_change)
        except tuning.QueryChangeRefused as exc:  # the figures first, then why nothing was written
            refused = exc
    if ctx.as_json:
        print_json({"sweep": result.to_dict(), "recommendation": rec.to_dict(),
                    "migration": [str(p) for p in written] if written else None})
    else:
        echo(str(result))
        echo("")
        echo(("recommended: " if rec.met else "" if rec.below is not None else "NOT MET: ") + rec.message)
        if written and model is not None:
            echo(f"wrote {written[0]} and {written[1].name}; next: pgvkit plan (the build's time and memory), "
                 f"pgvkit migrate (builds it concurrently), then pgvkit confirm --model {model.model} --query-file "
                 "FILE --write-migration (its search setting, measured on the built index) and pgvkit migrate again")
        elif written:
            echo(f"wrote {written[0]} and {written[1].name}; next: pgvkit plan (the build's time and memory), "
                 "pgvkit migrate (builds it at full size), then pgvkit confirm --write-migration (the search "
                 "settings, measured on the live index) and pgvkit migrate again")
        elif args.write_migration and not refused:
            echo("no migration written: nothing met the target")
    if refused:
        raise refused
    return 0 if rec.met or written else 1


def _graphs(text: str) -> list[tuple[int, int]]:
    """--hnsw 32:200,24:100 as [(32, 200), (24, 100)], each within pgvector's bounds (read when the
    arguments are, before any server is started)."""
    graphs = []
    for part in text.split(","):
        m, _, efc = part.strip().partition(":")
        if not (m.isdigit() and efc.isdigit() and 2 <= int(m) <= 100 and int(efc) >= 2 * int(m) and int(efc) <= 1000):
            raise argparse.ArgumentTypeError(f"give m:ef_construction pairs with m from 2 to 100 and ef_construction "
                                             f"from 2m to 1000, e.g. --hnsw 32:200 (not {text})")
        graphs.append((int(m), int(efc)))
    return graphs


def _second_model(url: str, name: str):
    """The second model's column `name` names (its model or column), before its switch."""
    from ..schema.models import models

    with connect(url) as conn:
        found = [m for m in models(conn) if name in (m.model, m.column)]
    if not found:
        raise PgvkitError(f"no model {name!r} recorded for ip_asset_embeddings: pgvkit model list shows them")
    if found[0].column == "embedding":
        raise PgvkitError(f"{name} is the model the embedding column holds, whose index plain pgvkit tune tunes: drop "
                          "--model")
    return found[0]


def _confirm_arguments(p) -> None:
    p.add_argument("--target-recall", type=float, default=0.95, metavar="R", help="recall@k to reach (default 0.95)")
    p.add_argument("--k", type=int, default=10, help="neighbours per search (default 10)")
    p.add_argument("--sample", type=int, metavar="N",
                   help="rows searched as similar assets, each left out of its own answer (default 1000, or every "
                        "row of a smaller table)")
    p.add_argument("--query-file", metavar="FILE",
                   help="new-vector queries, not in the table (.npy, .json or one [...] per line): e.g. the "
                        "application's logged query embeddings; without it only similar assets are measured")
    p.add_argument("--owners", default="auto", metavar="OWNERS",
                   help="owners whose filtered searches must reach the target, comma-separated; auto (default): the "
                        "largest and the one nearest 1%% of rows; none: no filtered searches")
    p.add_argument("--seed", type=int, default=0, help="which rows the sample takes (default 0)")
    p.add_argument("--write-migration", action="store_true",
                   help="bind the settings found to search_assets as the next numbered migration (and its down file)")
    p.add_argument("--hnsw", metavar="M:EF[,M:EF]", type=_graphs,
                   help="the HNSW graphs to build, as m:ef_construction pairs (default 16:64,24:100; a denser graph "
                        "for a hard table: 32:200)")
    p.add_argument("--model", metavar="NAME",
                   help="during a model change, before the switch: confirm the second model's index (its name or "
                        "its column; pgvkit model list), with --query-file of its dimension")


def confirm(args, ctx) -> int:
    from .. import tuning
    from ..tuning import confirm as confirming
    from .inserts import vector_file

    if not 0 < args.target_recall <= 1:
        raise PgvkitError("--target-recall must be between 0 and 1, e.g. --target-recall 0.95")
    from .checks import model_column

    url = ctx.target.url
    column = model_column(url, args.model)
    queries = vector_file(args.query_file, url, column) if args.query_file else None
    owners = {"auto": "auto", "none": None}.get(args.owners.strip().lower(),
                                                [o for o in args.owners.split(",") if o])
    result = confirming.confirm(url, k=args.k, target=args.target_recall, sample=args.sample, queries=queries,
                                owners=owners, seed=args.seed, progress=not ctx.as_json, echo=ctx.echo, column=column)
    written = None
    if args.write_migration and result.met:
        written = tuning.write_confirm_migration(url, result, ctx.migrations_dir)
    if ctx.as_json:
        print_json({**result.to_dict(), "migration": [str(p) for p in written] if written else None})
        return result.exit_code
    ctx.report(result)
    if result.predicted:
        measured = ", ".join(f"{shape} {value}" for shape, value in result.at_tuned.items() if shape != "setting")
        ctx.echo(f"pgvkit tune {result.predicted}"
                 + (f"; measured at its {result.at_tuned['setting']}: {measured}" if result.at_tuned else ""))
    if queries is None:
        ctx.echo("new vectors not measured: give --query-file (vectors not in the table) to confirm that shape too")
    if written:
        ctx.echo(f"wrote {written[0]} and {written[1].name}; next: pgvkit migrate, then pgvkit verify")
    elif result.met:
        ctx.echo("next: pgvkit confirm --write-migration binds these settings to search_assets")
    return result.exit_code


def _storage_arguments(p) -> None:
    p.add_argument("--write-migration", action="store_true",
                   help="write the next numbered migration (and its down file) that stores the vectors in the table's "
                        "pages and rewrites the table clustered by owner; a maintenance window: it locks the table")
    p.add_argument("--no-cluster", action="store_true",
                   help="rewrite with VACUUM FULL instead of CLUSTER: the vectors inline, the rows in no new order")


def storage(args, ctx) -> int:
    from ..tuning.storage_migration import vector_storage, write_storage_migration

    url = ctx.target.url
    with connect(url) as conn:
        now = vector_storage(conn)
    written = write_storage_migration(url, ctx.migrations_dir, cluster=not args.no_cluster) \
        if args.write_migration else None
    if ctx.as_json:
        print_json({**now.__dict__, "migration": [str(p) for p in written] if written else None})
        return 0
    ctx.echo(now.said())
    if args.write_migration and written is None:
        ctx.echo("nothing to write: the vectors are stored inline"
                 + ("" if args.no_cluster or now.partitioned else f" and the table is clustered on {now.owner_index}"))
    elif written:
        ctx.echo(f"wrote {written[0]} and {written[1].name}; next: pgvkit plan (it names what the rewrite locks), "
                 "then pgvkit migrate in a maintenance window, then pgvkit confirm (it measures the owners' routes)")
    else:
        ctx.echo("pgvkit storage --write-migration writes the migration that stores them inline, clustered by owner")
    return 0


COMMANDS = [
    Command("tune", "sweep IVFFlat/HNSW settings (vector, halfvec, binary) on a scratch copy, recommend the cheapest "
            "meeting a recall target within the memory budget",
            "pgvkit tune --target-recall 0.95 --rows 20000 --write-migration", tune, _tune_arguments,
            needs_session=True, writes=True),
    Command("confirm", "after tune's migration built the index: choose the search settings on the live index at full "
            "size (ef_search / probes, filtered-search depth) and bind them to search_assets",
            "pgvkit confirm --query-file new_images.npy --write-migration", confirm, _confirm_arguments,
            needs_session=True, writes=True),
    Command("storage", "where the vectors live (in the table's pages or out of line in TOAST); write the migration "
            "that stores them inline, the table clustered by owner, so small owners' exact searches read few pages",
            "pgvkit storage --write-migration", storage, _storage_arguments),
]
