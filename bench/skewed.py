"""A third kind of data, made so that no tuning code was fitted to it: clusters of very unequal size
on a curved low-dimensional structure, and owners with a long tail.

    rows = Skewed(seed=0).draw(1_000_000)        # unit vectors, 768-d
    owned = long_tail_owners(rows_labels, ...)   # see bench/scale.py --data skewed

What it is, and why each part:
- **A low intrinsic dimension.** Every row comes from a 12-dimensional latent point, mapped into 768
  dimensions by a fixed linear map plus a smooth bend (tanh of another projection), then a little
  isotropic noise. The densified real rows and the topics have tens of intrinsic dimensions; a
  graph index meets a different geometry here (neighbours are many and close, distances crowd).
- **Clusters of very unequal size.** 5,000 clusters with Zipf(1.3) weights: the largest holds about
  a fifth of the rows, half hold a handful each; each cluster's spread is log-normal with a wide
  sigma, so dense knots sit beside sparse ones.
- **Owners with a long tail.** 30,000 owners, Zipf(1.05) sizes, and an owner's rows lean towards
  their clusters (a brand's images look alike): each cluster has a home owner who holds 60 % of it.
  bench/scale.py adds its fixed-size owners (`one-percent`, uncorrelated with the vectors) on top.

New vectors (queries) are fresh draws from the same clusters: never rows of the table.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Skewed", "long_tail_owners"]

LATENT = 12
CLUSTERS = 5_000
OWNERS = 30_000


class Skewed:
    def __init__(self, dim: int = 768, *, seed: int = 0):
        rng = np.random.default_rng(seed + 7_919)
        self.rng = rng
        weights = 1.0 / np.arange(1, CLUSTERS + 1) ** 1.3
        self.weights = weights / weights.sum()
        self.centres = rng.standard_normal((CLUSTERS, LATENT)).astype(np.float32) * np.float32(1.5)
        self.spread = rng.lognormal(-1.0, 0.8, CLUSTERS).astype(np.float32)
        self.linear = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
        self.bend_in = (rng.standard_normal((LATENT, LATENT)) / np.sqrt(LATENT)).astype(np.float32)
        self.bend_out = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32) * np.float32(0.6)
        self.noise = np.float32(0.04)
        owners = 1.0 / np.arange(1, OWNERS + 1) ** 1.05
        self.owner_weights = owners / owners.sum()
        self.home = rng.choice(OWNERS, size=CLUSTERS, p=self.owner_weights)  # each cluster's home owner

    def draw(self, n: int, chunk: int = 100_000) -> tuple[np.ndarray, np.ndarray]:
        """n unit vectors and the cluster each came from."""
        which = self.rng.choice(CLUSTERS, size=n, p=self.weights)
        out = np.empty((n, self.linear.shape[1]), dtype=np.float32)
        for lo in range(0, n, chunk):
            w = which[lo:lo + chunk]
            z = self.centres[w] + self.rng.standard_normal((len(w), LATENT)).astype(np.float32) * self.spread[w, None]
            x = z @ self.linear + np.tanh(z @ self.bend_in) @ self.bend_out
            x += self.rng.standard_normal(x.shape).astype(np.float32) * self.noise * np.float32(np.sqrt(LATENT / x.shape[1]))
            out[lo:lo + chunk] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out, which


def long_tail_owners(skewed: Skewed, clusters: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An owner per row, 11 characters each (`tail-000042`): the row's cluster's home owner for 60 % of
    rows, a Zipf-drawn owner for the rest; the largest owner is named `big-owner-a`."""
    own = np.where(rng.random(len(clusters)) < 0.6, skewed.home[clusters],
                   rng.choice(OWNERS, size=len(clusters), p=skewed.owner_weights))
    names = np.array([f"tail-{i:06d}" for i in range(OWNERS)], dtype=object)
    names[np.bincount(own, minlength=OWNERS).argmax()] = "big-owner-a"
    return names[own]
