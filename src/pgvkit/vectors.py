"""Embeddings handed to pgvkit are checked here, against the column they are for, before the
server sees them.

pgvector refuses a wrong dimension, NaN and infinity itself, but with a message about the SQL
value (``expected 768 dimensions, not 3``) from deep inside a COPY or an INSERT; and it accepts
the all-zero vector, whose cosine distance to anything is NaN, so such a row silently never
turns up in a search. Here each of those is refused up front, naming the element or row.

Accepted: a sequence or 1-D numpy array of real numbers, or a pgvector text literal such as
``'[0.1, 0.2, 0.3]'``; for many vectors, a 2-D array or a sequence of those. Files: ``.npy``
(one vector or a matrix), ``.json`` (a list, or a list of lists), or text with one literal per
line.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path

import numpy as np

from .errors import PgvkitError

__all__ = ["BadVector", "as_vector", "as_vectors", "read_vector_file"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


class BadVector(PgvkitError):
    """An embedding that cannot go into the vector column: says which value and what was expected."""


def _expected(dim: int) -> str:
    return f"expected {dim} finite numbers for vector({dim})"


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _from_literal(text: str, what: str, dim: int):
    try:
        return json.loads(text)
    except ValueError:
        raise BadVector(f"{what} {_show(text)} is not a vector literal like [0.1, 0.2, ...]; {_expected(dim)}") from None


def _to_array(value, what: str, dim: int, ndim: int) -> np.ndarray:
    """`value` as a float64 array of `ndim` dimensions, or BadVector naming the first non-number."""
    if isinstance(value, str):
        value = _from_literal(value, what, dim)
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        array = value if value.dtype == np.float32 else value.astype(np.float64)  # no copy of a float32 matrix
    elif isinstance(value, (str, bytes, dict, set)) or not hasattr(value, "__len__"):
        shape = "a list of lists" if ndim == 2 else "a list"
        raise BadVector(f"{what} must be {shape} of numbers, not {type(value).__name__}; {_expected(dim)}")
    elif ndim == 2:
        rows = [_to_array(row, f"{what} row {i}", dim, 1) for i, row in enumerate(value)]
        for i, row in enumerate(rows):
            _check_length(row.shape[0], f"{what} row {i}", dim)
        return np.stack(rows) if rows else np.zeros((0, dim))
    else:
        items = np.asarray(value, dtype=object) if len(value) else np.zeros(0)
        if items.ndim != 1:
            raise BadVector(f"{what} must be a flat list of numbers, got shape {items.shape}; {_expected(dim)}")
        array = np.empty(len(items), dtype=np.float64)
        for i, item in enumerate(items):
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, numbers.Real):
                raise BadVector(f"{what} element {i} is {_show(item)} ({type(item).__name__}), not a number; {_expected(dim)}")
            try:
                array[i] = float(item)
            except OverflowError:
                array[i] = np.inf if item > 0 else -np.inf
            except ValueError:  # Decimal('sNaN')
                array[i] = np.nan
    if array.ndim != ndim:
        kind = "one vector (1-D)" if ndim == 1 else "a matrix of vectors (2-D)"
        raise BadVector(f"{what} must be {kind}, got shape {array.shape}; {_expected(dim)}")
    return array


def _check_length(n: int, name: str, dim: int) -> None:
    if n == 0:
        raise BadVector(f"{name} is empty; {_expected(dim)}")
    if n != dim:
        raise BadVector(f"{name} has {n} numbers; {_expected(dim)}")


def _check(array: np.ndarray, row_name, dim: int, allow_zero: bool) -> np.ndarray:
    """float32 rows of `array` (n x dim), or BadVector naming the first bad row and element."""
    _check_length(array.shape[1], row_name(0), dim)
    bad = ~np.isfinite(array) | (np.abs(array) > _FLOAT32_MAX)
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.ascontiguousarray(array, dtype=np.float32)
    zero = np.zeros(len(out), bool) if allow_zero else ~out.any(axis=1)
    bad_rows = bad.any(axis=1) | zero
    if bad_rows.any():
        r = int(np.argmax(bad_rows))  # the first bad row
        if zero[r] and not bad[r].any():
            raise BadVector(f"{row_name(r)} is all zeros: its cosine distance to anything is NaN, so no search "
                            f"finds it; expected a non-zero vector of {dim} numbers")
        i = int(np.argmax(bad[r]))
        v = array[r, i]
        problem = "NaN" if np.isnan(v) else "infinite" if np.isinf(v) else f"{v:g}, too large for pgvector's 32-bit floats"
        raise BadVector(f"{row_name(r)} element {i} is {problem}; {_expected(dim)}")
    return out


def as_vector(value, dim: int, *, what: str = "embedding", allow_zero: bool = False) -> np.ndarray:
    """`value` as a float32 array of shape (dim,), or BadVector saying what is wrong and what was expected."""
    return _check(_to_array(value, what, dim, 1).reshape(1, -1), lambda r: what, dim, allow_zero)[0]


def as_vectors(values, dim: int, *, what: str = "embeddings", allow_zero: bool = False) -> np.ndarray:
    """`values` as a float32 array of shape (n, dim), n >= 1, or BadVector naming the first bad row."""
    array = _to_array(values, what, dim, 2)
    if array.shape[0] == 0:
        raise BadVector(f"{what}: none given; {_expected(dim)}")
    return _check(array, lambda r: f"{what} row {r}", dim, allow_zero)


def read_vector_file(path, dim: int, *, allow_zero: bool = False) -> np.ndarray:
    """Vectors from a .npy, .json or text file (one ``[...]`` literal per line), as (n, dim) float32."""
    path = Path(path)
    what = path.name
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            values = json.loads(path.read_text(encoding="utf-8"))
        else:
            lines = [(n, line) for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                     if line.strip()]
            values = [as_vector(line, dim, what=f"{what} line {n}", allow_zero=allow_zero) for n, line in lines]
    except FileNotFoundError:
        raise BadVector(f"{path}: no such file; pass a .npy, .json or text file of vectors") from None
    except (OSError, ValueError) as exc:
        raise BadVector(f"{path}: cannot read vectors ({' '.join(str(exc).split())}); "
                        "pass a .npy, .json or text file of [...] literals") from None
    if isinstance(values, np.ndarray) and values.ndim == 1 or (
            isinstance(values, list) and values and isinstance(values[0], numbers.Real)):
        values = [values]  # a file holding one vector
    return as_vectors(values, dim, what=what, allow_zero=allow_zero)
