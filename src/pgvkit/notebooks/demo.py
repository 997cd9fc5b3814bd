"""A team's database on its first day with pgvkit, for the notebooks' committed outputs and the
tests: what the old docker setup made (the seed's SQL run by psql from the container's init
directory, so no pgvkit history), holding real embeddings with owners, asset ids and metadata of
the team's kind, none of the kit's conventions:

- owners as uneven as a customer base: three large ones (45 / 20 / 10 % of the rows) and a long
  tail of 240 small ones by a power law; names with spaces, slashes, capitals and `@`;
- asset ids as object-store keys and camera file names, 1 % of assets embedded twice (after a
  model update);
- metadata in the team's own shape (size, model, EXIF, tags).

`real_embeddings()` reads the sentence embeddings kept beside the project (../shared/data, see
its README) and lifts them into the seed's 768 dimensions by a fixed orthogonal map, which keeps
every cosine distance.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

__all__ = ["BIG_OWNERS", "SHARED_DATA", "real_embeddings", "team_owners", "team_asset_ids", "team_metadata",
           "load_team_rows", "docker_init", "first_day", "new_images", "before_notebook", "ModelChangeLab"]

BIG_OWNERS = ["Acme Photo", "brand-studio/EU", "ops@jarvis.example"]  # most of the rows
CAMERAS = ["Canon EOS R5", "iPhone 15 Pro", "DJI Mavic 3", None]
SHARED_DATA = Path(__file__).resolve().parents[4] / "shared" / "data"
SEED_SQL = Path(__file__).resolve().parents[3] / "migrations" / "001_init_vector_store.sql"


def real_embeddings(name: str = "pypi_summaries_minilm384.npy", dims: int = 768) -> np.ndarray:
    """Real sentence embeddings (float32, unit rows) lifted to `dims` by the Q of a seeded QR."""
    path = SHARED_DATA / name
    if not path.is_file():
        from ..errors import PgvkitError

        raise PgvkitError(f"{path} is missing: the real embeddings live in shared/data beside the project "
                          "(see its README)")
    x = np.load(path).astype(np.float32)
    q, _ = np.linalg.qr(np.random.default_rng(dims).standard_normal((dims, x.shape[1])))
    return (x @ q.T.astype(np.float32)).astype(np.float32)


def team_owners(n: int, rng: np.random.Generator) -> np.ndarray:
    """45% / 20% / 10% for three big owners, the rest spread over 240 small ones by a power law."""
    tail = np.array([f"cust_{rng.integers(16**7):07x}" for _ in range(240)])
    weights = 1.0 / np.arange(1, len(tail) + 1) ** 1.1
    big = rng.choice(len(BIG_OWNERS), size=n, p=[0.45 / 0.75, 0.20 / 0.75, 0.10 / 0.75])
    owners = np.array(BIG_OWNERS, dtype=object)[big]
    small = rng.random(n) >= 0.75
    owners[small] = tail[rng.choice(len(tail), size=int(small.sum()), p=weights / weights.sum())]
    return owners


def team_asset_ids(n: int, rng: np.random.Generator) -> list[str]:
    ids = []
    for i in range(n):
        if rng.random() < 0.7:
            ids.append(f"s3://jarvis-assets/{2019 + i % 6}/{rng.integers(1, 13):02d}/{rng.bytes(16).hex()}.jpg")
        else:
            ids.append(f"IMG_{rng.integers(10000):04d} ({i}).JPG")
    for i in rng.choice(n, size=n // 100, replace=False):  # re-embedded after a model update
        ids[i] = ids[(i + 1) % n]
    return ids


def team_metadata(i: int, rng: np.random.Generator) -> dict:
    camera = CAMERAS[i % len(CAMERAS)]
    meta = {"w": int(rng.integers(640, 6000)), "h": int(rng.integers(480, 4000)), "model": "clip-vit-l-14@v2"}
    if camera:
        meta["exif"] = {"camera": camera, "iso": int(rng.choice([100, 400, 3200]))}
    if i % 3 == 0:
        meta["tags"] = ["logo", "outdoor"][: 1 + i % 2]
    return meta


def load_team_rows(url: str, vectors: np.ndarray, *, seed: int = 2026) -> None:
    """One row per vector in the seed's table, with the team's owners, asset ids and metadata
    (binary COPY); then ANALYZE."""
    rows = len(vectors)
    rng = np.random.default_rng(seed)
    owners, assets = team_owners(rows, rng), team_asset_ids(rows, rng)
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY ip_asset_embeddings (asset_id, owner_id, embedding, metadata)"
                                " FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "varchar", "vector", "jsonb"])
            for i in range(rows):
                copy.write_row([assets[i], owners[i], vectors[i], Jsonb(team_metadata(i, rng))])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE ip_asset_embeddings")


def docker_init(url: str) -> str:
    """The seed's SQL run by psql, as the container's /docker-entrypoint-initdb.d did: the schema,
    no pgvkit history."""
    from ..server.embedded import bin_path

    subprocess.run([str(bin_path() / "psql"), url, "-v", "ON_ERROR_STOP=1", "-q", "-f", str(SEED_SQL)],
                   check=True, capture_output=True)
    return url


def first_day(url: str, rows: int = 12_000) -> str:
    """The team's database as pgvkit first meets it: the docker init's schema holding `rows` real
    embeddings of the team's kind (the last 1,000 of the set stay out, as new images)."""
    vectors = real_embeddings()
    docker_init(url)
    load_team_rows(url, vectors[:min(rows, len(vectors) - 1_000)])
    return url


def new_images(n: int = 200) -> np.ndarray:
    """Embeddings of images the team has not stored: the last rows of the set, which first_day
    leaves out."""
    return real_embeddings()[-n:]


def application_searches(url: str, queries: np.ndarray, rounds: int = 2) -> int:
    """The application between two watches: each query through search_assets `rounds` times,
    as the application sends it (binary, prepared); how many searches ran."""
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        with conn.cursor(binary=True) as cur:
            for _ in range(rounds):
                for q in queries:
                    cur.execute("SELECT * FROM search_assets(%s)", [q], prepare=True).fetchall()
    return rounds * len(queries)


def before_notebook(name: str, url: str, migrations_dir: str | Path) -> str | None:
    """What the team does between two notebooks, for the committed outputs' story (regenerate.py
    and pytest --nbval both call it, so the outputs they compare were made the same way):

    - before 04_index_tuning: `pgvkit recall` of the index the old docker setup left, recorded,
      with new images as queries (the baseline 04 tunes against);
    - before 07_recall_audit: a tuning migration, measured and written by the kit on this table
      (HNSW at pgvector's default build settings, the ef_search that meets 0.95 on both shapes),
      applied; so 07's history holds two audits with the index change between them. Around it,
      as cron would: `pgvkit watch` with the application searching between watches (the DBA
      first creates pg_stat_statements in the database), so 07's watch figure has the old
      index's era and the new one's.

    Returns what it did, in one line (None: nothing before this notebook)."""
    from ..audit.recall import audit
    from ..migrator import Migrator
    from ..tuning import tune, write_migration

    silent = lambda _: None  # noqa: E731
    if name.startswith("04_"):
        audit(url, sample=200, queries=new_images(), progress=False, echo=silent)
        return "recorded a recall audit of the live index (200 rows, 200 new images)"
    if name.startswith("07_"):
        from ..watch.look import watch

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        images = new_images()
        watch(url, sample=200, queries=images[:100], echo=silent)  # the first: the baseline of the statistics
        application_searches(url, images)
        watch(url, sample=200, queries=images[:100], echo=silent)
        _, _, chosen = tune(url, queries=100, grid={"kinds": ["vector"], "ivfflat_lists": [], "hnsw": [(16, 64)],
                                                    "ef_search": [40, 80, 160]},
                            memory_budget=None, query_change=False, progress=False, echo=silent)
        up, _ = write_migration(url, chosen, migrations_dir)
        Migrator(url, migrations_dir, echo=silent, progress=False).migrate()
        application_searches(url, images)
        watch(url, sample=200, queries=images[:100], echo=silent)
        return f"three watches around applying {up.name} ({chosen.point.config.label}, {chosen.point.search_param} = {chosen.point.search_value})"
    return None


class ModelChangeLab:
    """08_model_change's workbench: a scratch database holding the team's rows (real embeddings,
    the index the team's migrations made, rebuilt on them; probes 10 bound for an IVFFlat), a copy of the
    migrations the change's files are written into, and the new model's embeddings of those rows
    (the same texts lifted to `dims` by another orthogonal map) in a .jsonl keyed by asset_id.
    New images of either model (never in the table) for the audits, and others of the new model
    for tuning its index. `cleanup()` drops it all."""

    def __init__(self, url: str, migrations_dir, *, rows: int = 3000, dims: int = 1024):
        import json
        import shutil
        import tempfile

        from ..migrator.scratch import Scratch

        self.lab = Scratch(url)
        self.work = Path(tempfile.mkdtemp(prefix="pgvkit-model-change-"))
        self.migrations = self.work / "migrations"
        shutil.copytree(migrations_dir, self.migrations)
        self.url = self.lab.database("model_change", migrations=self.migrations)
        old, new = real_embeddings(), real_embeddings(dims=dims)
        load_team_rows(self.url, old[:rows])
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("REINDEX INDEX idx_embedding_cosine")  # learnt on its data (an IVFFlat's lists)
            conn.execute("ALTER FUNCTION search_assets(vector, integer, text) SET ivfflat.probes = 10")
            assets = conn.execute("SELECT min(id), asset_id FROM ip_asset_embeddings GROUP BY asset_id").fetchall()
        self.new_file = self.work / "new_model.jsonl"
        with self.new_file.open("w") as f:
            for i, asset in assets:  # row i holds text i - 1
                f.write(json.dumps({"asset_id": asset, "embedding": new[i - 1].round(6).tolist()}) + "\n")
        self.old_images, self.new_images = old[-200:], new[-200:]
        self.tuning_images = new[-400:-200]  # tune's and confirm's new images: the audits' are others

    def cleanup(self) -> None:
        import shutil

        self.lab.cleanup()
        shutil.rmtree(self.work, ignore_errors=True)

