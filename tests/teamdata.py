"""A team's own databases, as the notebooks meet them on a first day (none of the kit's
conventions: not its owner names, not its asset ids, not its metadata):

- `load_team_rows`: real sentence embeddings (../shared/data) in the seed's table, owners as
  uneven as a real customer base (a few large, a long tail of small ones, names with slashes,
  spaces, capitals and `@`), asset ids as object-store keys and camera file names (a few assets
  embedded twice), metadata in the team's own shape;
- `init_dir_database`: the schema made by running the seed's SQL with psql, as the docker init
  directory did, so there is no pgvkit history.
"""

from __future__ import annotations

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg.types.json import Jsonb

from .conftest import MIGRATIONS, psql_file, real_embeddings

BIG_OWNERS = ["Acme Photo", "brand-studio/EU", "ops@jarvis.example"]  # most of the rows
CAMERAS = ["Canon EOS R5", "iPhone 15 Pro", "DJI Mavic 3", None]


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


def load_team_rows(url: str, rows: int = 20_000, *, seed: int = 2026) -> None:
    """`rows` real embeddings (the first rows of ../shared/data; the last 1,000 stay out of every
    table, as new images) with the team's owners, asset ids and metadata; then ANALYZE."""
    vectors = real_embeddings()[:rows]
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


def init_dir_database(url: str) -> str:
    """The seed's SQL run by psql, as /docker-entrypoint-initdb.d did: schema, no history."""
    psql_file(url, MIGRATIONS / "001_init_vector_store.sql")
    return url
