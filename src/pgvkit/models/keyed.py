"""Embeddings keyed by the row they belong to, as a team's re-embedding job writes them:

- `.jsonl`: one object a line, `{"asset_id": "...", "embedding": [...]}` (or `"id": 123`);
- `.npz`: numpy's archive with an `embeddings` array and an `asset_ids` (or `ids`) array;
- `.csv` / `.tsv`: a header naming `asset_id` (or `id`) and `embedding`, the embedding as a
  pgvector literal `[0.1,0.2,...]` (what COPY ... TO writes).

`read_keyed()` returns the key column's name, the keys and the vectors (checked: finite, the
column's dimension), or one line naming the file, the line and what is wrong.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from ..vectors import BadVector, as_vector, as_vectors

__all__ = ["read_keyed", "KEYS"]

KEYS = ("asset_id", "id")  # what a row is found by: the team's asset id, or the table's id


def _key_of(names, path: Path, where: str) -> str:
    found = [k for k in KEYS if k in names]
    if not found:
        raise BadVector(f"{path.name}{where}: no asset_id or id to find the row by (has {', '.join(map(str, names))});"
                        " write each embedding with the asset_id (or id) of its row")
    return found[0]


def _jsonl(path: Path, dim: int):
    keys, vectors, key = [], [], None
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise BadVector(f"{path.name} line {n}: not JSON ({exc.msg}); write one object a line") from None
            if not isinstance(obj, dict) or "embedding" not in obj:
                raise BadVector(f"{path.name} line {n}: no \"embedding\"; write {{\"asset_id\": ..., \"embedding\": "
                                "[...]}} a line")
            key = key or _key_of(obj, path, f" line {n}")
            if key not in obj:
                raise BadVector(f"{path.name} line {n}: no {key} (the first line had one)")
            keys.append(obj[key])
            vectors.append(as_vector(obj["embedding"], dim, what=f"{path.name} line {n}"))
    return key, keys, vectors


def _npz(path: Path, dim: int):
    with np.load(path, allow_pickle=False) as archive:
        names = list(archive.files)
        if "embeddings" not in names:
            raise BadVector(f"{path.name}: no embeddings array (has {', '.join(names)}); save it as "
                            "np.savez(path, asset_ids=..., embeddings=...)")
        key = _key_of([n.removesuffix("s") if n in ("asset_ids", "ids") else n for n in names], path, "")
        keys, vectors = archive[key + "s"] if key + "s" in names else archive[key], archive["embeddings"]
    return key, keys.tolist(), as_vectors(vectors, dim, what=path.name)


def _delimited(path: Path, dim: int):
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ",")
        names = reader.fieldnames or []
        if "embedding" not in names:
            raise BadVector(f"{path.name}: no embedding column in the header ({', '.join(names)})")
        key = _key_of(names, path, " header")
        keys, vectors = [], []
        for n, row in enumerate(reader, 2):
            keys.append(row[key])
            vectors.append(as_vector(row["embedding"], dim, what=f"{path.name} line {n}"))
    return key, keys, vectors


def read_keyed(path, dim: int) -> tuple[str, list, np.ndarray]:
    """(key name, keys, vectors (n, dim) float32) from a keyed embeddings file (see the module)."""
    path = Path(path)
    readers = {".jsonl": _jsonl, ".npz": _npz, ".csv": _delimited, ".tsv": _delimited}
    if path.suffix not in readers:
        raise BadVector(f"{path.name}: pass a .jsonl, .npz, .csv or .tsv file of embeddings keyed by asset_id or id")
    if not path.is_file():
        raise BadVector(f"{path}: no such file")
    try:
        key, keys, vectors = readers[path.suffix](path, dim)
    except (OSError, ValueError) as exc:
        raise BadVector(f"{path.name}: cannot read it ({' '.join(str(exc).split())})") from None
    if not len(keys):
        raise BadVector(f"{path.name}: no embeddings in it")
    if key == "id":
        try:
            keys = [int(k) for k in keys]
        except (TypeError, ValueError):
            raise BadVector(f"{path.name}: an id that is not a whole number; ids are the table's bigint ids") from None
    else:
        keys = [str(k) for k in keys]
    return key, keys, np.asarray(vectors, dtype=np.float32).reshape(len(keys), dim)
