"""Vectors in and out of the table: binary COPY with pgvector-python (bulk), the test inserts
of notebook 03 and `pgvkit insert/load/unload` (inserts), and the synthetic topics that benches and
tests use beside the real embeddings (synthetic)."""

__all__ = ["bulk", "inserts", "synthetic"]
