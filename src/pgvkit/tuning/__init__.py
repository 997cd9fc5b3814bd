"""Index tuning that proves its answer, one module per step of notebooks/04_index_tuning:

1. workload  `prepare()`: the live table's vectors (a sample of `rows`) or synthetic ones, in a
   scratch table `pgvkit.tune_workload` (scratch_copy: the searched columns only, and what a
   killed run left), with held-out queries and a second, fresh query set; every step that
   touches that table holds the tune lock (lock: one tuning run per database).
2. truth     `exact_knn()`: the true neighbours in numpy; `recall_at_k()` against them.
3. build     `build()`: each candidate index on the scratch table (never on the live one), of each
   kind (vector, halfvec, binary quantization: pgvkit.kinds), with `maintenance_work_mem` sized
   so the build fits and parallel workers on.
4. measure   `measure()`: every query prepared with binary parameters; the EXPLAIN guard.
5. sweep     `sweep()`: every query-time setting of every candidate: recall, latency, build, size.
6. recommend `recommend()`: the cheapest configuration meeting the recall target within the memory
   budget (`resolve_budget()`).
7. migration `write_migration()`: that choice as a numbered migration (and its down file), with
   search_assets' query when the index kind changes.
8. confirm   `confirm_settings()`, after the migration built the index: the search settings chosen on
   the live index at full size through search_assets, bound by `write_confirm_migration()`.
Beside them, `vector_storage()` says where the vectors live and `write_storage_migration()` writes
the rewrite that stores them inline, clustered by owner (small owners read whole, pgvkit storage).
plots draws the trade-off; pipeline's `tune()` runs steps 1 to 6, as `pgvkit tune` does; on a table
larger than its sample it sweeps nested samples and carries recall to the table's size (scale).
"""

from ..audit.truth import MARGIN_SE, GroundTruth, exact_knn, near_duplicates, recall_at_k, recall_low
from ..indexes import plan_index
from . import scratch_copy
from .build import SEARCH_PARAM, Config, build, build_settings, spare_memory
from .confirmation import Confirmation
from .confirm import confirm as confirm_settings
from .lock import TUNE_LOCK, TuneLock, TuneRunning, hold, lock
from .measure import IndexNotUsed, measure, query_shape, require_index
from .migration import QueryChangeRefused, StackedTuning, refuse_stacking, write_migration
from .settings_migration import write_settings_migration as write_confirm_migration
from .storage_migration import VectorStorage, vector_storage, write_storage_migration
from .pipeline import preview_migration, resolve_budget, tune
from .plots import plot_builds, plot_kinds, plot_tradeoff
from .recommend import Recommendation, at_full_size, live_index_today, recommend
from .sweep import Point, SweepResult, candidates, default_grid, settings_of, sweep
from .workload import MOST_FREQUENT, SCHEMA, SCRATCH, WORKLOAD, Workload, cleanup, prepare

__all__ = [
    "Workload",
    "GroundTruth",
    "Config",
    "Point",
    "SweepResult",
    "Recommendation",
    "IndexNotUsed",
    "QueryChangeRefused",
    "StackedTuning",
    "refuse_stacking",
    "prepare",
    "exact_knn",
    "recall_at_k",
    "sweep",
    "recommend",
    "at_full_size",
    "live_index_today",
    "preview_migration",
    "write_migration",
    "Confirmation",
    "confirm_settings",
    "write_confirm_migration",
    "VectorStorage",
    "vector_storage",
    "write_storage_migration",
    "cleanup",
    "scratch_copy",
    "lock",
    "TuneLock",
    "TuneRunning",
    "hold",
    "tune",
    "plot_tradeoff",
    "plot_builds",
    "plot_kinds",
    # the steps' parts, for notebooks that go one level deeper
    "MOST_FREQUENT",
    "SCHEMA",
    "WORKLOAD",
    "SCRATCH",
    "SEARCH_PARAM",
    "TUNE_LOCK",
    "MARGIN_SE",
    "near_duplicates",
    "build",
    "build_settings",
    "spare_memory",
    "default_grid",
    "candidates",
    "settings_of",
    "resolve_budget",
    "measure",
    "plan_index",
    "query_shape",
    "require_index",
    "recall_low",
]
