"""The drift monitor: `fp monitor run` and `fp drift baseline` (docs/drift.md)."""
