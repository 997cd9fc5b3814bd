"""The audit: the exact neighbours streamed from the table (truth: the ground truth that tune,
confirm, recall and watch share), recall@k measured in both shapes, a new image and an existing
asset's neighbours, itself left out (recall), and its figures (plots)."""

__all__ = ["plots", "recall", "truth"]
