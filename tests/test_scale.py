"""Tuning a table too large to sweep whole (issue 27): which samples the tuner takes by itself,
how it carries recall from them to the live table's size, how it estimates the full-size build,
and what `pgvkit plan` says of it. Sweeps stand in as data here; the real runs are in
test_confirm.py and bench/scale.py."""

import numpy as np
import psycopg
import pytest

from pgvkit.migrator.files import read_migrations
from pgvkit.migrator.plan import (ESTIMATE, apply_steps, build_estimate as file_estimate, build_text,
                                  memory_note)
from pgvkit.sizing import hnsw_build_bytes
from pgvkit.tuning.build import Config
from pgvkit.tuning.scale import (AUTO_SAMPLE, DEFAULT_SLOPE, PREDICTED, _range, build_estimate, carry, enough, ivfflat_lists,
                                 sample_sizes)
from pgvkit.tuning.recommend import recommend
from pgvkit.tuning.sweep import SATURATED
from pgvkit.tuning.sweep import Point, SweepResult

from .conftest import MIGRATIONS

HNSW = Config("hnsw", (("m", 16), ("ef_construction", 64)))


def point(config: Config, value: int, recall: float, *, p95: float = 2.0) -> Point:
    p = Point(config, "hnsw.ef_search" if config.method == "hnsw" else "ivfflat.probes", value, True, p95_ms=p95,
              build_s=1.0)
    for shape in ("new", "similar"):
        p.measured(shape, np.full(200, recall), np.full(200, recall))
    return p


def sweep_at(rows: int, recalls: dict[int, float], build_s: float, extra=(), config: Config = HNSW) -> SweepResult:
    result = SweepResult("w", 10, [point(config, ef, r) for ef, r in recalls.items()] + list(extra),
                         builds=[{"index": config.label, "build_s": build_s, "size_bytes": 0}], live_rows=rows)
    return result


def test_a_table_no_larger_than_the_sample_is_swept_whole_and_a_larger_one_on_three_nested_samples():
    assert sample_sizes(40_000, None) == [40_000]
    assert sample_sizes(1_000_000, None) == [AUTO_SAMPLE // 4, AUTO_SAMPLE // 2, AUTO_SAMPLE]
    assert sample_sizes(1_000_000, 20_000) == [5_000, 10_000, 20_000]
    assert sample_sizes(1_000_000, 8_000) == [8_000]  # too small to say how recall falls: one size, as before
    assert sample_sizes(0, None) == [20_000]  # synthetic


def test_ivfflat_lists_follow_pgvectors_guidance():
    assert (ivfflat_lists(50_000), ivfflat_lists(1_000_000), ivfflat_lists(4_000_000)) == (50, 1000, 2000)


def test_recall_is_carried_to_the_live_size_by_how_it_fell_from_sample_to_sample():
    """The deficit doubles with every 4x rows (slope 0.5): at 16x the largest sample it doubles twice more."""
    results = {n: sweep_at(n, {40: 1 - d, 80: 1 - d / 2}, build_s=n / 1000)
               for n, d in ((25_000, 0.04), (50_000, 0.04 * 2 ** 0.5), (100_000, 0.08))}
    carried, slopes = carry(results, 1_600_000)
    assert slopes[(HNSW.label, "new")] == pytest.approx(0.5, abs=1e-6)
    by_value = {p.search_value: p for p in carried.points}
    assert by_value[40].shapes["new"]["recall"] == pytest.approx(1 - 0.08 * 4, abs=1e-6)
    assert by_value[80].shapes["new"]["recall"] == pytest.approx(1 - 0.04 * 4, abs=1e-6)
    assert by_value[80].recall < results[100_000].points[1].recall  # a larger table: less recall, never more
    assert by_value[40].note.startswith(f"{PREDICTED} 1,600,000 rows from samples of 25,000, 50,000, 100,000")
    assert carried.samples == [25_000, 50_000, 100_000] and carried.live_rows == 1_600_000


def test_when_the_samples_cannot_tell_the_fall_a_default_from_real_data_is_assumed_never_none():
    flat = {n: sweep_at(n, {40: 1.0}, build_s=1.0) for n in (25_000, 50_000, 100_000)}  # no deficit to fit
    carried, slopes = carry(flat, 1_000_000)
    assert slopes[(HNSW.label, "new")] == DEFAULT_SLOPE


def test_a_rise_with_size_within_the_samples_noise_is_not_carried_one_beyond_it_is():
    """Recall 0.95 / 0.96 / 0.97 on 25k / 50k / 100k rows: on 200 queries of which a few miss half
    their neighbours that is noise, and the floor's fall is carried; on queries that agree with each
    other it is how the data behave (1,000,000 topic rows measured the rise their samples fitted)."""
    def spread(recall: float, wide: bool) -> np.ndarray:  # per-query recall with this mean
        if not wide:
            return np.full(200, recall)
        misses = round((1 - recall) * 200 / 0.5)
        return np.array([0.5] * misses + [1.0] * (200 - misses))

    def rising(wide: bool) -> dict:
        out = {}
        for n, r in ((25_000, 0.95), (50_000, 0.96), (100_000, 0.97)):
            p = point(HNSW, 40, r)
            for shape in p.shapes:
                p.measured(shape, spread(r, wide), spread(r, wide))
            out[n] = SweepResult("w", 10, [p], builds=[{"index": HNSW.label, "build_s": 1.0, "size_bytes": 0}],
                                 live_rows=n)
        return out

    carried, slopes = carry(rising(wide=True), 1_000_000)
    assert slopes[(HNSW.label, "new")] == 0.1 and carried.points[0].recall < 0.97
    carried, slopes = carry(rising(wide=False), 1_000_000)
    assert slopes[(HNSW.label, "new")] == pytest.approx(-0.3)  # fitted -0.37, held to the steepest rise allowed
    assert carried.points[0].recall == pytest.approx(1 - 0.03 * 10 ** -0.3)


def noisy(recall: float, n: int = 200) -> np.ndarray:
    """Per-query recall with this mean, as real queries give it: most find all, some miss half."""
    misses = round((1 - recall) * n / 0.5)
    return np.array([0.5] * misses + [1.0] * (n - misses))


def noisy_samples(deficits: dict[int, float]) -> dict:
    out = {}
    for n, d in deficits.items():
        p = point(HNSW, 40, 1 - d)
        for shape in p.shapes:
            p.measured(shape, noisy(1 - d), noisy(1 - d))
        out[n] = SweepResult("w", 10, [p], builds=[{"index": HNSW.label, "build_s": 1.0, "size_bytes": 0}],
                             live_rows=n)
    return out


def test_a_carried_recall_comes_with_a_range_from_the_falls_standard_error_and_the_choice_uses_its_low_end():
    """Deficits of 200 noisy queries falling as rows^0.5: the carried mean sits inside a range whose
    low end also counts the fall's own standard error (steeper fall, sample at its low end), wider than
    the sample's noise alone would give; a target between that low end and the mean is not met, and
    tune says the range and the lower bound it used."""
    results = noisy_samples({25_000: 0.02, 50_000: 0.02 * 2 ** 0.5, 100_000: 0.04})
    carried, slopes = carry(results, 1_000_000)
    [p] = carried.points
    new = p.shapes["new"]
    slope, error = carried.slopes[f"{HNSW.label} / new"]
    assert slope == pytest.approx(0.5, abs=0.01) and 0.1 < error < 0.5  # 8-16 of 200 queries miss: a noisy fall
    assert new["low"] < new["recall"] < new["high"] <= 1
    sample = results[100_000].points[0].shapes["new"]
    noise_only = 1 - (1 - sample["low"]) * 10 ** slope
    assert new["low"] < noise_only - 0.002  # the fall's error widens the range beyond the sample's noise
    assert p.recall_low == new["low"] or p.recall_low == p.shapes["similar"]["low"]
    target = round((new["low"] + new["recall"]) / 2, 3)
    rec = recommend(carried, target)
    assert not rec.met and rec.below is p
    assert f"range {new['low']:.3f}-{new['high']:.3f}" in rec.message
    assert f"the lower bound the decision used: {p.recall_low:.3f}" in rec.message
    assert recommend(carried, round(new["low"] - 0.005, 3)).met


def test_ivfflat_keeps_its_rows_per_list_lists_and_probes_scale_with_the_table():
    ivf = Config("ivfflat", (("lists", 100),))
    results = {n: sweep_at(n, {40: 0.97}, 1.0, extra=[point(ivf, 8, 0.96, p95=3.0)] if n == 100_000 else [])
               for n in (25_000, 50_000, 100_000)}
    carried, _ = carry(results, 1_000_000)
    [scaled] = [p for p in carried.points if p.config.method == "ivfflat"]
    assert (dict(scaled.config.params)["lists"], scaled.search_value) == (1000, 80)
    assert scaled.recall == pytest.approx(0.96) and scaled.p95_ms == pytest.approx(30.0)  # ten times the probes


def test_the_full_size_build_is_estimated_from_the_largest_sample_build_as_n_log_n():
    """Each insert searches a graph of log n layers: the largest sample's build scaled as n log n,
    whatever the smaller samples' builds say (their ratio, extrapolated tenfold, is mostly noise)."""
    results = {n: sweep_at(n, {40: 0.97}, build_s=t) for n, t in ((25_000, 10.7), (50_000, 21.0), (100_000, 47.0))}
    assert build_estimate(results, HNSW, 1_000_000) == pytest.approx(47.0 * 10 * np.log(1e6) / np.log(1e5))
    # what 1,000,000 densified real rows took on this machine (476 s) within 25 %; rows^1.16 said 680 s
    assert 0.75 < 476 / build_estimate(results, HNSW, 1_000_000) < 1.25
    denser = Config("hnsw", (("m", 24), ("ef_construction", 100)))  # built on the largest sample only
    once = {100_000: sweep_at(100_000, {40: 0.97}, build_s=151.0, config=denser)}
    # 1,000,000 topic rows built in 1,645 s from 151 s on 100,000
    assert 0.75 < 1645 / build_estimate(once, denser, 1_000_000) < 1.25
    assert np.isnan(build_estimate(once, HNSW, 1_000_000))  # never built: no estimate


def test_plan_shows_the_build_estimate_tune_wrote(tmp_path):
    path = tmp_path / "003_tune_idx.sql"
    path.write_text("-- pgvkit:no-transaction\n-- Written by pgvkit tune on 2026-11-30\n"
                    f"{ESTIMATE}build_s=1260 rows=1000000 maintenance_work_mem=4200MB\n"
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS x_next ON ip_asset_embeddings USING hnsw"
                    " (embedding vector_cosine_ops);\n")
    [m] = read_migrations(tmp_path)
    assert file_estimate(m) == {"build_s": 1260.0, "rows": 1_000_000, "maintenance_work_mem": "4200MB"}
    [step] = apply_steps([m], {})
    assert step["build"] == "~21 min on 1,000,000 rows, maintenance_work_mem 4200MB"


def test_plan_carries_tunes_estimate_to_the_rows_the_table_holds_when_it_is_planned(tmp_path):
    """A migration tune wrote last week is applied to a table that has grown since: the time is
    scaled n log n, and once the graph outgrows the memory the file gives the build, plan says so."""
    path = tmp_path / "003_tune_idx.sql"
    path.write_text(f"-- pgvkit:no-transaction\n{ESTIMATE}build_s=600 rows=1000000 maintenance_work_mem=5123MB\n"
                    "CREATE INDEX CONCURRENTLY IF NOT EXISTS x_next ON ip_asset_embeddings USING hnsw"
                    " (embedding vector_cosine_ops);\n")
    [m] = read_migrations(tmp_path)
    assert file_estimate(m, 1_000_000)["build_s"] == 600  # the rows tune counted: its figure
    grown = file_estimate(m, 1_100_000)
    assert grown["build_s"] == pytest.approx(600 * 1.1 * np.log(1.1e6) / np.log(1e6))
    assert grown["rows"] == 1_100_000 and grown["tuned_rows"] == 1_000_000
    assert build_text(grown) == (
        "~11 min on 1,100,000 rows (tune's estimate for 1,000,000, scaled), maintenance_work_mem 5123MB")
    assert memory_note(m, {"rows": 1_100_000, "need_bytes": hnsw_build_bytes(1_100_000, 768)}) is None  # 4.1 GB fits
    doubled = memory_note(m, {"rows": 2_000_000, "need_bytes": hnsw_build_bytes(2_000_000, 768)})
    assert doubled == ("003_tune_idx: the HNSW graph needs ~7.5 GB at 2,000,000 rows, more than the "
                       "maintenance_work_mem 5123MB the file sets (the table has grown from the 1,000,000 rows it was tuned for): the build "
                       "would go on on disk, many times slower than estimated; run pgvkit tune --write-migration again")


def test_plan_counts_the_rows_the_tuned_index_would_build_on_and_the_memory_its_graph_needs(migrated, tmp_path):
    from pgvkit import Migrator

    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) SELECT 'a' || g, 'o', "
                     "array_fill(0.1, ARRAY[768])::vector FROM generate_series(1, 2500) g")
        applied = conn.execute("SELECT max(version) FROM pgvkit.schema_migrations").fetchone()[0]
    for f in MIGRATIONS.glob("*.sql"):
        (tmp_path / f.name).write_text(f.read_text())
    tuned = tmp_path / f"{applied + 1:03d}_tune_idx_embedding_cosine.sql"
    index = ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "Tuned Next" ON "public"."ip_asset_embeddings" USING hnsw '
             "(embedding vector_cosine_ops) WITH (m = 24, ef_construction = 100);\n")
    said = []
    migrator = Migrator(migrated, tmp_path, echo=said.append)
    for memory, short in (("64MB", False), ("8MB", True)):  # 2,500 x 768 at m = 24: ~10 MB
        tuned.write_text(f"-- pgvkit:no-transaction\n{ESTIMATE}build_s=40 rows=5000 maintenance_work_mem={memory}\n"
                         + index)
        plan = migrator.plan()
        assert plan.steps[0]["build"] == ("~18 s on 2,500 rows (tune's estimate for 5,000, scaled), "
                                          f"maintenance_work_mem {memory}")
        assert any("the HNSW graph needs ~9.9 MB at 2,500 rows" in note for note in plan.notes) is short, plan.notes
    migrator.migrate()
    assert any("for 2,500 rows (" in line and "tune's 40 s for the 5,000 rows it counted" in line
               for line in said), said


def test_a_denser_graph_swept_only_on_the_largest_sample_falls_as_the_cheapest_one_did():
    dense = Config("hnsw", (("m", 24), ("ef_construction", 100)))
    results = {n: sweep_at(n, {40: 1 - d}, build_s=1.0, extra=[point(dense, 40, 0.99)] if n == 100_000 else [])
               for n, d in ((25_000, 0.02), (50_000, 0.02 * 2 ** 0.3), (100_000, 0.02 * 4 ** 0.3))}
    carried, slopes = carry(results, 1_000_000)
    assert slopes[(dense.label, "new")] == pytest.approx(slopes[(HNSW.label, "new")]) == pytest.approx(0.3)
    [p] = [p for p in carried.points if p.config == dense]
    assert p.recall == pytest.approx(1 - 0.01 * 10 ** 0.3)


def test_a_sample_sweep_goes_on_until_its_recall_would_still_meet_the_target_at_the_live_size():
    """10x the sample: the deficit allowed shrinks tenfold (the steepest fall carried: 0.05 -> 0.005);
    at 2x it halves; near 1x it is the target itself; never past the saturation every sweep stops at."""
    assert enough(0.95, 1_000_000, 100_000) == pytest.approx(0.995)
    assert enough(0.95, 200_000, 100_000) == pytest.approx(0.975)
    assert enough(0.95, 100_000, 100_000) == pytest.approx(0.95)
    assert enough(0.99, 100_000_000, 100_000) == SATURATED


def test_a_sample_sweep_of_a_larger_table_stops_by_the_lower_bound_the_choice_then_reads():
    """Mean 0.997 over 200 queries of which 6 found 9 of 10: above the 0.995 that 1M rows ask of a
    100,000-row sample, but not by its lower bound (0.997 less three standard errors): a sweep that
    carries recall to the live size goes on to the next setting (on 1,000,000 densified rows a
    sweep stopped by the mean left (24, 100) at ef_search 160, and tune chose a slower setting)."""
    p = Point(HNSW, "hnsw.ef_search", 160, True)
    per_query = np.array([1.0] * 194 + [0.9] * 6)
    for shape in ("new", "similar"):
        p.measured(shape, per_query, np.full(200, 1.0))
    stop_at = enough(0.95, 1_000_000, 100_000)
    assert p.recall == pytest.approx(0.997) and p.recall_low < stop_at
    assert p.reaches(stop_at) and not p.reaches(stop_at, pessimistic=True)
    assert p.reaches(0.98, pessimistic=True)  # a lower bound above the bar stops it either way


@pytest.mark.parametrize("slope, error", [(0.69, 0.32), (1.0, 0.5), (0.2, 0.1)])
def test_the_setting_a_sweep_stops_at_carries_to_the_target_by_its_low_end_whatever_the_falls_error(slope, error):
    """A sweep stops at a sample lower bound of enough(); the carried range's low end falls no faster
    than in proportion to the rows either (as the mean), so that setting still meets the target at
    the live size: on 1,000,000 densified rows a fall of 0.69 +- 0.32 pushed it under, and tune chose
    a graph whose searches were twice as slow."""
    stop_at = enough(0.95, 1_000_000, 100_000)
    figures = {"recall": stop_at + 0.002, "fresh": stop_at + 0.002, "low": stop_at, "p5": 1.0}
    carried = _range(figures, slope, error, 10.0)
    assert carried["low"] >= 0.95 - 1e-9 and carried["low"] <= carried["recall"] <= carried["high"]
