"""Production search, watched: pgvkit watch."""

from __future__ import annotations

from .base import Command, print_json


def _watch_arguments(p) -> None:
    p.add_argument("--sample", type=int, default=200, metavar="N",
                   help="rows measured as similar-assets queries in the recall audit (default 200; 0: no audit)")
    p.add_argument("--query-file", metavar="FILE",
                   help="new-vector queries, not in the table (.npy, .json or one [...] per line): a sample of the "
                        "application's logged query embeddings")
    p.add_argument("--recall-budget", type=float, default=120.0, metavar="SECONDS",
                   help="the longest the recall audit may take on one server (default 120)")
    p.add_argument("--target", type=float, default=0.95, metavar="R", help="recall each shape must reach (default 0.95)")
    p.add_argument("--p95-budget-ms", type=float, default=100.0, metavar="MS",
                   help="search_assets' p95 latency budget, estimated from the server's statistics (default 100)")
    p.add_argument("--dead-share", type=float, default=0.2, metavar="SHARE",
                   help="dead rows / all rows of the table above which it fails (default 0.2)")


def watch(args, ctx) -> int:
    from ..watch.look import Thresholds, watch as look
    from .inserts import vector_file

    url = ctx.target.url
    queries = vector_file(args.query_file, url, "embedding") if args.query_file else None
    result = look(url, ctx.standbys, sample=args.sample, queries=queries, recall_budget=args.recall_budget,
                  thresholds=Thresholds(args.target, args.p95_budget_ms, args.dead_share),
                  echo=ctx.echo)
    if ctx.as_json:
        print_json(result.to_dict())
    else:
        ctx.echo(str(result))
    return result.exit_code


COMMANDS = [
    Command("watch", "look at production search on the primary and each standby: its cost from the server's "
                     "statistics since the last watch, its plan, dead rows and a recall sample; recorded (exit 2 "
                     "past a threshold)",
            "pgvkit watch --query-file logged_queries.npy   (from cron: */15 * * * *)", watch, _watch_arguments,
            needs_session=True),
]
