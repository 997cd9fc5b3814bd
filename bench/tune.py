"""The full default sweep of `pgvkit tune` at 100k x 768 synthetic by default: wall time
(target: under 10 minutes on 2 cores) and whether the recommendation still meets its target on a
second, fresh query set it was not chosen on.

    .venv/bin/python bench/tune.py [--rows 100000] [--target 0.95]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from _common import report, seed_database
from pgvkit.tuning import tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--target", type=float, default=0.95)
    args = parser.parse_args()
    with seed_database() as url:
        start = time.perf_counter()
        workload, result, rec = tune(url, target=args.target, rows=args.rows, source="synthetic", progress=False,
                                     echo=lambda line: print(line, file=sys.stderr, flush=True))
        wall = time.perf_counter() - start
    choice = rec.point
    report({
        "benchmark": "tune (full default sweep)", "workload": workload.describe(), "cores": os.cpu_count(),
        "wall_s": round(wall, 1),
        "builds": [{**{k: v for k, v in b.items() if k != "notices"}, "build_s": round(b["build_s"], 1)}
                   for b in result.builds],
        "points_measured": sum(p.index_used for p in result.points), "points": len(result.points),
        "recommendation": rec.to_dict()["choice"], "met": rec.met,
        "fresh_query_recall": round(choice.fresh_recall, 4) if choice else None,
        "target": f"wall < 600 s and fresh-query recall >= {args.target}",
        "target_met": wall < 600 and bool(choice) and choice.fresh_recall >= args.target,
    })


if __name__ == "__main__":
    main()
