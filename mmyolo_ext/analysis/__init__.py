"""Analysis helpers (what the assigner does with a dataset's labels)."""
