"""What the notebooks and the CLI print reads as a person reads it: times to the second, blanks
where nothing was measured, lists as words, an audit's title naming its index in a few words,
and the live index's recall today in one line."""

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import psycopg

from pgvkit.audit.recall import Audit, ShapeResult, audit
from pgvkit.data.inserts import load
from pgvkit.display import html_table, text_table
from pgvkit.tuning import live_index_today
from pgvkit.watch.history import readable

IVFFLAT = ("CREATE INDEX idx_embedding_cosine ON public.ip_asset_embeddings USING ivfflat (embedding vector_cosine_ops) "
           "WITH (lists='100')")
SETTINGS = {"ivfflat.probes": "1", "hnsw.ef_search": "40", "ivfflat.iterative_scan": "relaxed_order",
            "hnsw.iterative_scan": "relaxed_order"}


def test_a_table_shows_times_to_the_second_nothing_for_nan_and_lists_as_words():
    at = datetime(2026, 12, 7, 3, 58, 48, 506589, tzinfo=timezone.utc)
    rows = [{"applied_at": at, "mean ms": float("nan"), "failed": ["recall similar assets", "dead rows"]}]
    text = text_table(rows, ["applied_at", "mean ms", "failed"])
    assert "2026-12-07 03:58:48+00:00" in text and ".506589" not in text
    assert "nan" not in text.lower() and "[" not in text
    assert "recall similar assets, dead rows" in text
    assert "<td style='text-align:left'></td>" in html_table(rows, ["mean ms"])  # a blank cell, not NaN


def test_the_watch_history_reads_as_a_table_not_a_dataframe():
    frame = pd.DataFrame([
        {"at": pd.Timestamp("2026-12-07 03:59:33.515253", tz="UTC"), "server": "primary", "searches": np.nan,
         "mean_ms": np.nan, "p95_ms": np.nan, "similar_assets": 0.128, "new_vectors": 0.124,
         "plan": "index idx_embedding_cosine", "index": IVFFLAT, "dead_share": 0.0,
         "failed": ["recall similar assets", "recall new vectors"]},
        {"at": pd.Timestamp("2026-12-07 04:00:02", tz="UTC"), "server": "primary", "searches": 400.0,
         "mean_ms": 1.23, "p95_ms": 2.6, "similar_assets": 0.983, "new_vectors": 0.969,
         "plan": "index idx_embedding_cosine", "index": IVFFLAT, "dead_share": 0.0, "failed": []}])
    table = readable(frame)
    text, html = str(table), table._repr_html_()
    assert table.title == "Every watch of ip_asset_embeddings, oldest first: 2 look(s) of 1 server(s)"
    for shown in (text, html):
        assert "NaN" not in shown and "nan" not in shown and "['" not in shown and ".515253" not in shown
    assert "2026-12-07 03:59:33+00:00" in text and "recall similar assets, recall new vectors" in text
    assert [r["searches"] for r in table.rows()] == [None, 400.0]


def test_an_audits_title_names_its_index_and_only_that_methods_settings():
    shapes = {"similar_assets": ShapeResult(200, 0.12, 0.0, 0.6, 1.4, np.full(200, 0.12))}
    title = Audit("jarvis", "ip_asset_embeddings", 20_000, 10, 0.95, IVFFLAT, SETTINGS, shapes).title
    assert title == ("Recall@10 of ip_asset_embeddings on jarvis (20,000 rows): MISSES the target 0.95; "
                     "idx_embedding_cosine: ivfflat (lists=100); ivfflat.probes = 1, "
                     "ivfflat.iterative_scan = relaxed_order")
    bare = Audit("jarvis", "ip_asset_embeddings", 20_000, 10, 0.95, None, SETTINGS, shapes).title
    assert "no vector index" in bare and "hnsw.ef_search = 40" in bare  # nothing to narrow the settings to


def test_the_live_index_today_is_one_line_from_its_latest_audit(migrated):
    from .conftest import real_embeddings

    assert live_index_today(migrated).startswith("No audit of ip_asset_embeddings is recorded yet")
    vectors = real_embeddings()
    load(migrated, vectors=vectors[:3000], progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("REINDEX INDEX idx_embedding_cosine")  # the seed's IVFFlat, learnt on the rows
        conn.execute("ANALYZE ip_asset_embeddings")
    measured = audit(migrated, sample=100, queries=vectors[29_000:29_100], progress=False, echo=lambda _: None)
    line = live_index_today(migrated)
    worse = min(s.recall for s in measured.shapes.values())
    assert line.startswith(f"Today the live index (ivfflat (lists=100); ivfflat.probes = ")
    assert f"returns {worse:.0%} of the true neighbours" in line
    assert all(f"{name.replace('_', ' ')} {s.recall:.3f} (100 queries" in line for name, s in measured.shapes.items())
    assert line.endswith("The target: 0.95.")


def test_a_brief_report_lists_what_is_not_a_pass_under_the_whole_reports_counts():
    from pgvkit.checks import Check, diagnosis

    healthy = diagnosis("jarvis", [Check("connection", "pass", "connected"), Check("locks", "pass", "none")])
    assert str(healthy.brief()) == "Doctor on jarvis: 2 pass, 0 warn, 0 fail; what is not a pass is listed"
    assert healthy.brief()._repr_html_().count("<tr") == 0  # no empty table under the line
    ailing = diagnosis("jarvis", [*healthy, Check("locks", "warn", "process 7 idle", "ddl waits", "commit")])
    brief = ailing.brief()
    assert brief.title.startswith("Doctor on jarvis: 2 pass, 1 warn, 0 fail") and [c.name for c in brief] == ["locks"]
    assert "process 7 idle" in str(brief) and "connected" not in str(brief)
