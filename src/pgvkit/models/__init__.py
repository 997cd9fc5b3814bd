"""A change of embedding model, one migration at a time: add the new model's column, index it,
switch search to it, retire the old one (change, switch), fill the column from files keyed by
asset (keyed, backfill), and the figures of notebook 08 (plots). The registry of model columns
itself is part of the schema (pgvkit.schema.models)."""

__all__ = ["backfill", "change", "keyed", "plots", "switch"]
