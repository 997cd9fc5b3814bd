"""Ties are not misses: copies of one image (placeholders, re-uploads) are at the same distance
from any query, so an exact search may return any of them; and a table smaller than k holds
fewer than k neighbours. An exact search scores 1.0 on any data (issue 23, cases 3 and 4)."""

import json

import numpy as np
import psycopg
import pytest

from pgvkit.data.inserts import load
from pgvkit.health.verify import verify
from pgvkit.search import SIGNATURE
from pgvkit.tuning import GroundTruth, exact_knn, recall_at_k

from .conftest import MIGRATIONS, real_embeddings, run_cli


def recall_cli(url, *args):
    proc = run_cli("recall", "--json", "--database-url", url, *args, timeout=600)
    assert not proc.stderr.count("Traceback"), proc.stderr
    return proc, (json.loads(proc.stdout) if proc.stdout.strip() else None)


def exact_search(url: str) -> None:
    """Every search exact, the index kept: an IVFFlat whose probes reach every list."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
        conn.execute("CREATE INDEX idx_embedding_cosine ON ip_asset_embeddings USING ivfflat (embedding vector_cosine_ops)"
                     " WITH (lists = 4)")
        conn.execute(f"ALTER FUNCTION {SIGNATURE} SET ivfflat.probes = 4")
        conn.execute("ANALYZE ip_asset_embeddings")


@pytest.fixture
def duplicated(migrated):
    """4,000 real rows and 50 real vectors stored 20 times each (5,000 rows)."""
    vectors = real_embeddings()
    copies = np.repeat(vectors[10_000:10_050], 20, axis=0)
    load(migrated, vectors=np.concatenate([vectors[:4000], copies]), progress=False)
    return migrated


def test_a_search_that_returns_another_copy_of_a_tied_neighbour_scores_full_recall():
    base = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    truth = exact_knn(base, np.array([[1, 0.5, 0]], np.float32), 2)
    listed = int(truth.ids[0, 1])
    other = ({1, 2, 3} - {listed}).pop()  # a copy the truth did not happen to list
    assert recall_at_k(truth, [[0, other]], [[truth.distances[0, 0], truth.distances[0, 1]]]).tolist() == [1.0]
    assert recall_at_k(truth, [[0, 4]], [[truth.distances[0, 0], 0.9]]).tolist() == [0.5]  # farther: a miss


def test_recall_counts_only_the_neighbours_that_exist():
    base = np.eye(4, dtype=np.float32)
    own = exact_knn(base, base, 10, ids=np.arange(4), exclude=np.arange(4))
    assert (own.ids[:, 3:] == -1).all() and np.isinf(own.distances[:, 3:]).all()
    assert not any(i in own.ids[i] for i in range(4))
    found = [[j for j in range(4) if j != i] for i in range(4)]
    assert recall_at_k(own, found, [[1.0] * 3] * 4).tolist() == [1.0] * 4
    assert recall_at_k(own, [row[:2] for row in found], [[1.0] * 2] * 4).tolist() == pytest.approx([2 / 3] * 4)
    nothing = GroundTruth(np.full((1, 10), -1), np.full((1, 10), np.inf))  # an owner with one row, itself
    assert recall_at_k(nothing, [[]], [[]]).tolist() == [1.0]


@pytest.mark.slow
def test_an_exact_search_over_twenty_fold_copies_scores_full_recall_and_verify_passes(duplicated):
    url = duplicated
    exact_search(url)
    proc, data = recall_cli(url, "--sample", "1000")
    assert proc.returncode == 0, proc.stderr
    assert data["shapes"]["similar_assets"]["recall"] == 1.0 and data["met"]
    report = verify(url, migrations_dir=MIGRATIONS)
    assert report["recall"].status == "pass", report["recall"].detail
    assert report.exit_code == 0, [(c.name, c.status, c.detail) for c in report.checks if c.status == "fail"]


def test_one_vector_copied_fifty_times_does_not_fail_a_strict_target_on_an_exact_search(migrated):
    vectors = real_embeddings()
    load(migrated, vectors=np.concatenate([vectors[:1950], np.repeat(vectors[20_000:20_001], 50, axis=0)]),
         progress=False)
    exact_search(migrated)
    proc, data = recall_cli(migrated, "--sample", "1000", "--target", "0.99")
    assert proc.returncode == 0 and data["shapes"]["similar_assets"]["recall"] == 1.0, proc.stderr


@pytest.mark.parametrize("rows, k, sample", [(5, 10, 5), (50, 100, 50)], ids=["5 rows, k 10", "50 rows, k 100"])
def test_a_table_with_fewer_rows_than_k_scores_full_recall_on_an_exact_search(migrated, rows, k, sample):
    load(migrated, vectors=real_embeddings()[:rows], progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")  # a handful of rows: every search reads them all
    proc, data = recall_cli(migrated, "--sample", str(sample), "--k", str(k))
    assert proc.returncode == 0, proc.stderr
    assert data["shapes"]["similar_assets"]["recall"] == 1.0
    assert verify(migrated, migrations_dir=MIGRATIONS)["recall"].status == "pass"
